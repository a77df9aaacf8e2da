"""How a catalog name becomes the other names it goes by, and which names are already taken.

The one source of these rules: the renderers and their templates (object names), the local
runner, the checks, the service template's filters (templates/service/local_extensions.py)
and validation (which refuses a name that would clash) all read them here.
"""

from __future__ import annotations

import keyword
import sys
from collections.abc import Mapping
from typing import Protocol

Path_ = tuple[str | int, ...]


# What claims() reads of a catalog. models.Catalog is one; the models import this module (a
# service key is checked by package_problem), so it cannot import them back.
class _Service(Protocol):
    @property
    def depends_on(self) -> Mapping[str, object]: ...


class _Catalog(Protocol):
    @property
    def services(self) -> Mapping[str, _Service]: ...
    @property
    def infrastructure(self) -> Mapping[str, object]: ...
    @property
    def externals(self) -> Mapping[str, object]: ...


def pkg(name: str) -> str:
    """The Python package of a service: a DNS label with '-' made '_' is a valid identifier
    once it cannot start with a digit."""
    ident = str(name).replace("-", "_")
    return ident if ident[:1].isalpha() else f"svc_{ident}"


def env_name(name: str) -> str:
    """The environment-variable stem of a service: user-auth -> USER_AUTH (USER_AUTH_URL, ...)."""
    return pkg(name).upper()


def url_variable(name: str) -> str:
    """The variable a caller reads a dependency's address from: user-auth -> USER_AUTH_URL."""
    return f"{env_name(name)}_URL"


# The header carrying the client key, which the gateway sets and every hop passes on; Istio hashes
# on it for a service with session_affinity. The runtime names it too (tracing.CLIENT_HEADER), and
# cannot import this package: tests/test_validate.py holds the two equal.
CLIENT_HEADER = "x-nexus-client"
# A live service's WebSocket endpoint (the runtime's live.PATH, held equal the same way), which
# the mesh routes with no timeout.
LIVE_PATH = "/ws"
# Where the gateway relays a live service's endpoint: LIVE_RELAY + its name (the runtime's
# live.RELAY; `nexus verify` opens it).
LIVE_RELAY = "/live/"


# -- how a service reaches its infrastructure -----------------------------------------------------

# Where a pod finds its credentials: each a file, from a Secret, read by the runtime's settings
# (pydantic-settings' secrets_dir, told by SECRETS_DIR in the ConfigMap). Files rather than
# environment variables: a process's environment leaks into crash reports and child processes.
SECRETS_DIR = "/var/run/secrets/nexus"


def secret(component: str, user: str | None = None) -> str:
    """The Secret holding a password: ``postgres`` its administrator's, ``postgres.ledger-mgr``
    ledger-mgr's own. A dot no DNS label has keeps the two kinds apart."""
    return component if user is None else f"{component}.{user}"


def password_setting(component: str) -> str:
    """The runtime setting (and the Secret file) holding a service's password for ``component``."""
    return f"{pkg(component)}_password"


def connection_url(engine: str, service: str, host: str, port: int, password: str | None = None) -> str:
    """Where ``service`` connects to a server of ``engine``, as its own user (in its own
    database). Without ``password`` the URL has none: Kubernetes hands it over as a file and the
    runtime puts it in (hex passwords need no quoting)."""
    secret = f":{password}" if password else ""
    if engine == "postgres":
        return f"postgresql://{pkg(service)}{secret}@{host}:{port}/{pkg(service)}"
    if engine == "redis":
        return f"redis://{service}{secret}@{host}:{port}/0"
    return f"nats://{service}{secret}@{host}:{port}"


# -- the Python package and distribution a service becomes -------------------------------------

# The services' image runs Python 3.11 (the service template's Dockerfile), whatever Python runs
# nexus; these standard-library modules exist in one of 3.11..3.14 but not in all, so a name is
# refused the same way on each: removed in 3.12 and 3.13 (PEP 594), added in 3.14.
OTHER_PYTHONS_STDLIB = frozenset(
    {
        "asynchat", "asyncore", "distutils", "imp", "smtpd",
        "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "lib2to3", "mailcap", "msilib", "nis",
        "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
        "annotationlib", "compression",
    }
)  # fmt: skip
# sys.stdlib_module_names leaves out the standard library's own tests, package `test`.
STDLIB = frozenset(sys.stdlib_module_names) | OTHER_PYTHONS_STDLIB | {"test"}

# Our own distributions and the import packages they provide.
OWN = {"nexus-platform": ("nexus",), "nexus-runtime": ("nexus_runtime",)}
# What a service's process loads besides its own package: the runtime's dependencies
# (templates/runtime/pyproject.toml) and the service's test tooling (its pyproject's `test`
# extra), with everything they depend on. A service of the same distribution name would replace
# one of them when pip installs it; a package of the same import name would shadow it.
# tests/test_validate.py recomputes this closure from the installed metadata and fails when
# a dependency brings in a name missing here.
RUNTIME_DISTRIBUTIONS = {
    "alembic": ("alembic",),
    "annotated-doc": ("annotated_doc",),
    "annotated-types": ("annotated_types",),
    "anyio": ("anyio",),
    "async-timeout": ("async_timeout",),
    "asyncpg": ("asyncpg",),
    "certifi": ("certifi",),
    "click": ("click",),
    "colorama": ("colorama",),
    "exceptiongroup": ("exceptiongroup",),
    "fastapi": ("fastapi",),
    "greenlet": ("greenlet",),
    "h11": ("h11",),
    "httpcore": ("httpcore",),
    "httptools": ("httptools",),
    "httpx": ("httpx",),
    "idna": ("idna",),
    "importlib-metadata": ("importlib_metadata",),
    "iniconfig": ("iniconfig",),
    "mako": ("mako",),
    "markupsafe": ("markupsafe",),
    "nats-py": ("nats",),
    "opentelemetry-api": ("opentelemetry",),
    "packaging": ("packaging",),
    "pluggy": ("pluggy",),
    "prometheus-client": ("prometheus_client",),
    "pydantic": ("pydantic",),
    "pydantic-core": ("pydantic_core",),
    "pydantic-settings": ("pydantic_settings",),
    "pygments": ("pygments",),
    "pytest": ("pytest", "_pytest", "py"),
    "python-dotenv": ("dotenv",),
    "redis": ("redis",),
    "sniffio": ("sniffio",),
    "sqlalchemy": ("sqlalchemy",),
    "starlette": ("starlette",),
    "tomli": ("tomli",),
    "typing-extensions": ("typing_extensions",),
    "typing-inspection": ("typing_inspection",),
    "uvicorn": ("uvicorn",),
    "websockets": ("websockets",),
    "zipp": ("zipp",),
}


# Top-level folders and modules of a generated service beside its package (the service
# template's tests, imported by their bare names): a package of the same name would be them.
# tests/test_validate.py holds this to the template's tree.
SERVICE_TEMPLATE_MODULES = ("conftest", "migrations", "test_health", "test_routes", "tests")


def _taken_by() -> dict[str, str]:
    """Package or distribution name -> why a service cannot take it (the end of a message)."""
    out: dict[str, str] = {
        m: f"'{m}' is already {'the folder' if m == 'tests' else 'a module'} of the service's own tests"
        for m in SERVICE_TEMPLATE_MODULES
    }
    for dist, imports in RUNTIME_DISTRIBUTIONS.items():
        out[dist] = (
            f"'{dist}' is a distribution the runtime or the services' tests need, which installing the service would "
            "replace"
        )
        out.update(
            {
                i: (
                    f"'{i}' is a package the runtime or the services' tests import (from '{dist}'), which it would "
                    "shadow"
                )
                for i in imports
            }
        )
    for dist, imports in OWN.items():
        out[dist] = f"'{dist}' is Nexus's own distribution, which installing the service would replace"
        out.update({i: f"'{i}' is Nexus's own package, which it would shadow" for i in imports})
    return out


_TAKEN = _taken_by()


def package_problem(name: str) -> str | None:
    """Why service ``name`` cannot become its Python package ``pkg(name)`` (nor its
    distribution, which has the service's own name), with a fix; None when it can."""
    package = pkg(name)
    if keyword.iskeyword(package):
        why = f"'{package}' is a Python keyword: no code can import it"
    elif package in STDLIB:
        why = f"'{package}' is a module of Python's standard library, which it would shadow"
    elif package in _TAKEN or name in _TAKEN:
        why = _TAKEN.get(package) or _TAKEN[name]
    else:
        return None
    return (
        f"service '{name}' becomes the Python package '{package}', but {why}; rename the service, e.g. "
        f"'{suggest(name, 'service')}'"
    )


def suggest(name: str, suffix: str) -> str:
    """``name`` with a suffix, cut so that the result is still a 63-character DNS label."""
    return f"{name[: 62 - len(suffix)].rstrip('-')}-{suffix}"


# -- namespaces ----------------------------------------------------------------------------------

KUBE_SYSTEM = "kube-system"  # the cluster DNS every NetworkPolicy admits
ISTIO_NAMESPACE = "istio-system"  # istiod and the default ingress gateway
LINKERD_NAMESPACE = "linkerd"  # Linkerd's control plane
INGRESS_NGINX_NAMESPACE = "ingress-nginx"  # the ingress a Linkerd install admits to the gateway
# Kubernetes' own namespaces (kube-*, default) and the ones the manifests name as someone
# else's: deploying into one would put the platform's default deny over their pods.
RESERVED_NAMESPACE_PREFIX = "kube-"
RESERVED_NAMESPACES = ("default", ISTIO_NAMESPACE, LINKERD_NAMESPACE, INGRESS_NGINX_NAMESPACE)


def namespace_problem(namespace: str) -> str | None:
    """Why the platform cannot be deployed into ``namespace``; None when it can."""
    if namespace.startswith(RESERVED_NAMESPACE_PREFIX) or namespace in RESERVED_NAMESPACES:
        return (
            f"namespace '{namespace}' belongs to Kubernetes or to the mesh and ingress the manifests admit "
            f"(kube-*, {', '.join(RESERVED_NAMESPACES)}): the platform's default deny would cut off their pods; "
            "use a namespace of the platform's own, e.g. its name"
        )
    return None


# -- objects in the namespace, docs pages ----------------------------------------------------------

# Namespace-wide objects under fixed names; the templates take the names from here.
DEFAULT_DENY = "default-deny"  # NetworkPolicy (k8s/base)
PEER_AUTHENTICATION = "default"  # Istio PeerAuthentication
ALLOW_NOTHING = "allow-nothing"  # Istio AuthorizationPolicy
PROMETHEUS_SCRAPE = "prometheus-scrape"  # Istio and Linkerd AuthorizationPolicy
PROMETHEUS_IDENTITY = "prometheus"  # Linkerd MeshTLSAuthentication
ISTIO_CONTROL_PLANE = "istio-control-plane"  # NetworkPolicy (istio component)
LINKERD_CONTROL_PLANE = "linkerd-control-plane"  # NetworkPolicy (linkerd component)

# Kinds as the generated manifests write them; the same kind of two API groups differs.
ISTIO_POLICY, LINKERD_POLICY = "AuthorizationPolicy (Istio)", "AuthorizationPolicy (Linkerd)"
FIXED_OBJECTS: tuple[tuple[str, str, str], ...] = (
    ("NetworkPolicy", DEFAULT_DENY, "the namespace-wide default deny"),
    ("NetworkPolicy", ISTIO_CONTROL_PLANE, "the policy that lets every pod reach istiod"),
    ("NetworkPolicy", LINKERD_CONTROL_PLANE, "the policy that lets every pod reach Linkerd's control plane"),
    ("PeerAuthentication (Istio)", PEER_AUTHENTICATION, "the namespace's mTLS setting"),
    (ISTIO_POLICY, ALLOW_NOTHING, "the policy that closes every workload"),
    (ISTIO_POLICY, PROMETHEUS_SCRAPE, "the policy that admits Prometheus"),
    (LINKERD_POLICY, PROMETHEUS_SCRAPE, "the policy that admits Prometheus"),
    ("MeshTLSAuthentication (Linkerd)", PROMETHEUS_IDENTITY, "Prometheus's identity"),
)

# What a service, an infrastructure component or an external is written as, besides its
# hostname: (how its name becomes the objects' name, the kinds of object with that name).
# Every mesh counts, whichever is on: a name must not become invalid when the mesh changes.
Objects = tuple[tuple[str, tuple[str, ...]], ...]
SERVICE_OBJECTS: Objects = (
    ("{}", (
        "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
        "ServiceMonitor", "PrometheusRule", ISTIO_POLICY, "Sidecar (Istio)", "DestinationRule (Istio)",
        "VirtualService (Istio)",
        "Server (Linkerd)", LINKERD_POLICY,
    )),
    ("{}-config", ("ConfigMap",)),
    ("{}-callers", ("MeshTLSAuthentication (Linkerd)",)),
)  # fmt: skip
INFRASTRUCTURE_OBJECTS: Objects = (
    (
        "{}",
        (
            "ServiceAccount",
            "Service",
            "StatefulSet",
            "PodDisruptionBudget",
            "Secret",
            "ServiceEntry (Istio)",
            ISTIO_POLICY,
            "Server (Linkerd)",
            LINKERD_POLICY,
        ),
    ),
    ("{}-config", ("ConfigMap",)),
    ("{}-ingress", ("NetworkPolicy",)),
    ("{}-callers", ("MeshTLSAuthentication (Linkerd)",)),
    # a managed instance's: the Job that makes its users (named -<hash> after it), its own objects
    ("{}-provision", ("Job", "ServiceAccount (managed)", "ConfigMap (managed)", "NetworkPolicy (managed)")),
)
EXTERNAL_OBJECTS: Objects = (("{}", ("ServiceEntry (Istio)",)),)
EDGE_KINDS = ("DestinationRule (Istio)",)


def config_map(service: str) -> str:
    return _named(SERVICE_OBJECTS, "ConfigMap").format(service)


def callers(workload: str) -> str:
    """The Linkerd MeshTLSAuthentication listing who may call ``workload``."""
    return _named(SERVICE_OBJECTS, "MeshTLSAuthentication (Linkerd)").format(workload)


def ingress_policy(component: str) -> str:
    """The NetworkPolicy admitting an infrastructure component's users."""
    return _named(INFRASTRUCTURE_OBJECTS, "NetworkPolicy").format(component)


def provisioner(component: str) -> str:
    """The provisioning Job of a managed instance, and its ServiceAccount, ConfigMap and NetworkPolicy."""
    return _named(INFRASTRUCTURE_OBJECTS, "Job").format(component)


def edge_rule(target: str, source: str) -> str:
    """The Istio DestinationRule of one edge's own circuit breaking."""
    return f"{target}-from-{source}"


def _named(table: Objects, kind: str) -> str:
    return next(pattern for pattern, kinds in table if kind in kinds)


# The per-service docs pages share their folder with two fixed pages; file names are compared
# case-insensitively (a service named "readme" would overwrite README.md on macOS).
SERVICE_DOCS = "docs/services"
SERVICES_INDEX_PAGE = f"{SERVICE_DOCS}/README.md"
SERVICE_TEMPLATE_PAGE = f"{SERVICE_DOCS}/service-template.md"
FIXED_PAGES = ((SERVICES_INDEX_PAGE, "the services index"), (SERVICE_TEMPLATE_PAGE, "the service-template page"))


def service_page(name: str) -> str:
    return f"{SERVICE_DOCS}/{name}.md"


# Names the generator derives from the catalog, (kinds, name, owner): no two objects of one
# kind may share a name. The owner is the catalog key it derives from; None for a fixed object
# or page. Kinds that always share a name are one claim: a 10,000-service catalog makes some
# 60,000 claims, not 200,000.
Claim = tuple[tuple[str, ...], str, Path_ | None]


def claims(cat: _Catalog) -> list[Claim]:
    """Every name the generator can write, fixed ones first, then per component, external,
    edge and service in sorted order: a clash is reported at the later claim, so at the name
    a person chose rather than at one the generator derives."""
    out: list[Claim] = [((kind,), name, None) for kind, name, _ in FIXED_OBJECTS]
    out += [(("docs page",), path.lower(), None) for path, _ in FIXED_PAGES]
    for table, section in ((INFRASTRUCTURE_OBJECTS, "infrastructure"), (EXTERNAL_OBJECTS, "externals")):
        for key in sorted(getattr(cat, section)):
            owner: Path_ = (section, key)
            out += [(kinds, pattern.format(key), owner) for pattern, kinds in table]
    for source, svc in sorted(cat.services.items()):
        out += [
            (EDGE_KINDS, edge_rule(target, source), ("services", source, "depends_on", target))
            for target in sorted(svc.depends_on)
        ]
    for name in sorted(cat.services):
        owner = ("services", name)
        out += [
            (("Python package",), pkg(name), owner),
            (("environment variable",), url_variable(name), owner),
            (("docs page",), service_page(name).lower(), owner),
        ]
        out += [(kinds, pattern.format(name), owner) for pattern, kinds in SERVICE_OBJECTS]
    return out


def clashes(cat: _Catalog) -> list[tuple[Claim, Claim, str]]:
    """(earlier, later, kind) for each claim whose name an earlier claim of one of its kinds has."""
    by_name: dict[str, list[Claim]] = {}
    out = []
    for claim in claims(cat):
        earlier = by_name.setdefault(claim[1], [])
        for other in earlier:
            common = [kind for kind in claim[0] if kind in other[0]]
            if common:
                out.append((other, claim, common[0]))
                break
        earlier.append(claim)
    return out


_FIXED_WHAT = {(kind, name): what for kind, name, what in FIXED_OBJECTS} | {
    ("docs page", path.lower()): what for path, what in FIXED_PAGES
}


def claimant(claim: Claim) -> str:
    """Who makes ``claim``, in words."""
    kinds, name, owner = claim
    if owner is None:
        return _FIXED_WHAT[(kinds[0], name)]
    if owner[0] == "services" and len(owner) == 4:
        return f"the edge {owner[1]} -> {owner[3]}"
    return {"services": "service", "infrastructure": "infrastructure", "externals": "external"}[
        str(owner[0])
    ] + f" '{owner[1]}'"
