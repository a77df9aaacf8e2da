"""Checks of the rendered Kubernetes files, read back from their YAML rather than from intent.

Everything here parses what render_k8s produced and compares it with the catalog: a template
slip, a hand edit or a bad merge shows up as one line naming the file and the service. The
checks: every object a service needs is there; Service and container ports are the catalog's;
every dependency URL names the right service and port; the NetworkPolicies open exactly the
catalog's edges (and each service's infrastructure and externals, and Prometheus's scrapes); sync-waves put every hard
dependency first; every hop of every critical path is an edge, allowed, to a ready-probed
service; pods meet Pod Security "restricted"; optionally, every manifest passes the strict
Kubernetes schemas (k8s_schema).
"""

from __future__ import annotations

import hashlib
import itertools
import marshal
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml

from ..catalog import naming
from ..catalog.naming import config_map, url_variable
from ..digest import of_text
from ..parallel import beside
from ..paths import code_key
from ..render import k8s as render_k8s
from ..render.context import RenderContext
from ..render.infrastructure import FOLDER as infrastructure_folder
from ..render.infrastructure import MANAGED_PROVISIONING
from ..render.k8s import BASE, service_path
from ..yamlread import FILES, PARSED, Memo, by_runs, check_syntax, load, split, top_scalars
from .documents import Doc, get, items, mapping
from .kubernetes_schema import DEFAULT, SchemaValidator, held

NAME = "app.kubernetes.io/name"
WAVE = "argocd.argoproj.io/sync-wave"
KINDS = (
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
)


READS = "k8s/"  # every .yaml file under it is read in full here (parses() leaves them to this check)

# What the checks here read of a base object, by kind, as nested keys (True: the whole value; a
# list's items are held to the keys given for the list). The rest (env, resources, volumes,
# liveness probes) is never read: the cross-file checks hold every base object of the catalog at
# once, and at 10,000 services the whole objects were 440 MB and most of an edit's checks. A kind
# not listed (NetworkPolicy) is kept whole, as is every overlay patch; the schemas always read
# whole objects.
_CONTAINER = dict.fromkeys(("name", "image", "ports", "envFrom", "readinessProbe", "securityContext"), True)
_WORKLOAD = {
    "metadata": {"name": True, "labels": True, "annotations": True},
    "spec": {
        "replicas": True,
        "template": {
            "metadata": {"labels": True},
            "spec": {
                "automountServiceAccountToken": True,
                "securityContext": True,
                "containers": _CONTAINER,
                "initContainers": _CONTAINER,
            },
        },
    },
}
_NAMED: dict[str, Any] = {"metadata": {"name": True}}
CHECKED: dict[str, dict[str, Any]] = {
    "Deployment": _WORKLOAD,
    "StatefulSet": _WORKLOAD,
    "Job": _WORKLOAD,
    "Service": {**_NAMED, "spec": {"ports": True}},
    "ConfigMap": {**_NAMED, "data": True},
    "ServiceAccount": _NAMED,
    "HorizontalPodAutoscaler": _NAMED,
    "PodDisruptionBudget": _NAMED,
}


def _kept(value: Any, keys: Any) -> Any:
    if keys is True:
        return value
    if isinstance(value, list):
        return [_kept(item, keys) for item in value]
    if isinstance(value, dict):
        return {k: _kept(v, keys[k]) for k, v in value.items() if k in keys}
    return value  # not the shape the keys expect: kept as it is, for the check to name


_SCHEMAS = SchemaValidator()  # the strict Kubernetes schemas, each kind's compiled once per process


def read_base(text: str) -> dict[str, list[Any]]:
    """One base file, read once: its objects as the checks read them (CHECKED) and what the
    strict Kubernetes schemas say of each ([kind, name, message]; the Kustomization is not an
    object). Nothing else reads these documents whole, so they are not kept whole."""
    objects: list[dict[str, Any]] = []
    schema: list[list[str]] = []
    for data in map(load, split(text)):
        if not isinstance(data, dict):
            continue
        kind = str(data.get("kind"))
        keys = CHECKED.get(kind)
        objects.append(
            data if keys is None else {"apiVersion": data.get("apiVersion"), "kind": kind, **_kept(data, keys)}
        )
        if kind != "Kustomization":
            schema += [[kind, str(get(data, "metadata", "name")), m] for m in _SCHEMAS.problems(data)]
    return {"objects": objects, "schema": schema}


# each base file read, by its text, kept between runs: an edit reads again only the files it changed
BASE_FILES = Memo(read_base, salt=hashlib.blake2b(Path(__file__).read_bytes() + _SCHEMAS.salt, digest_size=16).digest())
BASE_CACHE = "k8s-base"
PARALLEL_FROM = 400  # base files (about 3,000 documents): below this, forking costs more than it saves


def kustomizations(text: str) -> list[Any]:
    """The Kustomizations among a run of a file's documents (yamlread.by_runs). Its syntax is
    checked whole (what does not parse is a failure: nothing else reads these files), and a
    document is read into data only where its kind is Kustomization (yamlread.top_scalars:
    whole only where its first lines cannot tell): a service added changes the monitoring
    component's monitors and rules, 16 MB at 10,000 services, which reading whole took 0.7 s
    of such an edit, the syntax 0.1, its documents' kinds 0.3 (by run: the runs it changed)."""
    check_syntax(text)
    found = []
    for doc in split(text):
        if top_scalars(doc, ("kind",)).get("kind") == "Kustomization":
            data = PARSED(doc)
            if isinstance(data, dict) and data.get("kind") == "Kustomization":
                found.append(data)
    return found


# Of the other files under k8s/ the checks read the overlays whole (their patches) and of the
# rest (components, CRDs) only the Kustomizations: the monitoring component's rules and
# monitors, 16 MB at 10,000 services, are not unmarshalled again on every run.
KUSTOMIZATIONS = Memo(kustomizations, salt=BASE_FILES.salt + b"kustomizations-runs")
KUSTOMIZATIONS_CACHE = "k8s-kustomizations"


def _other_files(path: str) -> Memo:
    return FILES if path.startswith("k8s/overlays/") else KUSTOMIZATIONS


def _other_documents(path: str, text: str) -> list[Any]:
    """What the checks read of a k8s file outside the base (``_other_files``), a run of its
    documents at a time (yamlread.by_runs): the mappings among them."""
    return [d for d in by_runs(_other_files(path), text) if isinstance(d, dict)]


def in_base(path: str) -> bool:
    return path.startswith(BASE + "/") and path.endswith(".yaml")


def prefetch(files: dict[str, str]) -> None:
    """Read the base files not read before on every core: parsing them and the schemas are
    most of a cold run's checks."""
    # the base files picked, then sorted: sorting every path first was 0.06 s at 10,000 services
    BASE_FILES.prefetch((files[p] for p in sorted(filter(in_base, files))), least=PARALLEL_FROM)


@dataclass
class Policy:
    """What the rendered NetworkPolicies allow, as (source, target) pairs on the target's port."""

    ingress: set[tuple[str, str]] = field(default_factory=set)
    egress: set[tuple[str, str]] = field(default_factory=set)
    from_outside: set[str] = field(default_factory=set)  # pods open to other namespaces
    to_internet: set[str] = field(default_factory=set)  # pods with ipBlock egress on 443
    scraped: set[str] = field(default_factory=set)  # pods Prometheus may reach, on their own port

    def allows(self, source: str, target: str) -> bool:
        return (source, target) in self.ingress and (source, target) in self.egress


def run(
    ctx: RenderContext, files: dict[str, str], *, strict_schema: bool = True, validator: SchemaValidator | None = None
) -> list[str]:
    """Every check; [] when all pass. A run whose inputs (catalog, k8s files, this code) already
    passed once, in this process or in the validator's kept passes, is not repeated."""
    return start(ctx, files, strict_schema=strict_schema, validator=validator)()


def start(
    ctx: RenderContext,
    files: dict[str, str],
    *,
    strict_schema: bool = True,
    validator: SchemaValidator | None = None,
    digests: Mapping[str, str] | None = None,
    seeded: bool = False,
) -> Callable[[], list[str]]:
    """``run``, begun: on a large catalog in a forked worker (parallel.beside) while the caller
    runs the other checks (at 10,000 services these take 4 s, the others 3 s); call what it
    returns for the failures. What the worker reads is read here first (``prefetch``), so the
    memos this process keeps hold it. ``digests``: the files' SHA-256, when already known.
    ``seeded``: the memos started from another space's (a new checkout's first run,
    ``Prepared.seeded``), and keep only what this run uses."""
    validator = validator or DEFAULT
    paths = sorted(p for p in files if p.startswith(READS) and p.endswith(".yaml"))
    # by all of Nexus's code and templates (paths.code_key), not this module's alone: the checks
    # call into the documents' and YAML readers, and a change there must run them again
    key = validator.run_key(["k8s-checks", str(strict_schema), code_key(), ctx.checks_json], files, paths, digests)
    # with seeded memos the checks run even where their pass holds, so that the memos keep what
    # they read: skipped, they left a new checkout's memos without the overlays' documents and
    # the services' outcomes, which its first edit then read and checked again (0.2 s at 10,000)
    if validator.passed(key) and not seeded:
        return list
    for memo in (FILES, KUSTOMIZATIONS):  # in turn, here: kept by this process's memos
        memo.prefetch_runs(files[p] for p in paths if not in_base(p) and _other_files(p) is memo)
    passed = validator.seen  # read where _run runs (a forked worker inherits it)
    ran = beside(
        lambda: _run(ctx, files, paths, strict_schema, passed=passed, digests=digests),
        worth=len(paths) >= PARALLEL_FROM,
    )

    def finish() -> list[str]:
        found, fresh, used, across = ran()
        OUTCOMES.took(fresh, used)  # a worker's own memo is lost with it
        validator.used.add(across)
        if not found:
            validator.keep(across)
            validator.keep(key, implying=across)
        return found

    return finish


class Outcome(NamedTuple):
    """One service's own base file, checked against its catalog entry: its failures, by check,
    and what the checks across files take from it."""

    parse: list[str]
    ports: list[str]  # ports, URLs and settings against the catalog (_ports_and_config)
    workloads: list[str]  # its Deployment (_workload)
    policies: list[str]  # what its NetworkPolicies allow that cannot be read as pairs (_read_policy)
    schema: list[tuple[str, str, str]]  # (kind, name, message) from the strict schemas
    objects: list[tuple[str, str]]  # (kind, name) of each object the file holds, in order
    ingress: list[tuple[str, str]]
    egress: list[tuple[str, str]]
    from_outside: list[str]
    scraped: list[str]
    to_internet: list[str]
    deny: bool  # the file holds a namespace-wide default deny
    wave: int | None  # its Deployment's sync-wave; None when there is no integer one
    probed: bool  # its Deployment's container is ready-probed on the platform's ready path
    # the port of each workload the checks looked up, as the catalog had it (the service's own
    # dependencies, and any other peer the file names): trusted again only while all still hold
    consulted: dict[str, int | None]


class _Outcomes(Memo):
    """Each service's ``Outcome``, kept between runs (in the user's cache folder, as the memos
    are) by the file's bytes, the service's catalog entry and the platform's settings and
    infrastructure (``_outcome_key``), with the ports it looked up of others (``consulted``):
    an edit re-checks the files and entries it changed, and the services whose neighbours'
    ports changed. At 10,000 services unmarshalling every file's objects and checking each
    again was 4.7 s of every edit."""

    def __init__(self, salt: bytes) -> None:
        super().__init__(_never, salt)

    def get(self, key: bytes) -> Outcome | None:
        kept = self.entries.get(key)
        if kept is None:
            return None
        try:
            found = Outcome(*marshal.loads(kept))
        except (EOFError, ValueError, TypeError):
            return None
        self.used.add(key)
        return found

    def put(self, key: bytes, outcome: Outcome) -> None:
        self.used.add(key)
        self.entries[key] = marshal.dumps(tuple(outcome))
        self.added = True

    def took(self, fresh: dict[bytes, bytes], used: set[bytes]) -> None:
        """What a run of the checks added and used, where it ran in a worker (``start``)."""
        self.entries.update(fresh)
        self.used |= used
        self.added |= bool(fresh)

    def save(self) -> None:
        # every run of the checks looks up every service's outcome: the others are of files or
        # entries that are gone, and are dropped rather than read by every later run
        if self.used and len(self.entries) > len(self.used):
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
            self.added = True
        super().save()


def _never(text: str) -> Any:
    raise TypeError("outcomes are kept by the caller's key (_Outcomes.get and put)")


OUTCOMES = _Outcomes(salt=hashlib.blake2b(code_key().encode() + BASE_FILES.salt, digest_size=16).digest())
OUTCOMES_CACHE = "k8s-outcomes"


def _shared(ctx: RenderContext) -> bytes:
    """What every service's outcome may read of the catalog besides its own entry."""
    cat = ctx.catalog
    infrastructure = (f"\0{n}\0{c.model_dump_json()}" for n, c in sorted(cat.infrastructure.items()))
    return (cat.platform.model_dump_json() + "".join(infrastructure)).encode()


def _outcome_key(text: str, name: str, entry: str, shared: bytes) -> bytes:
    digest = hashlib.blake2b(OUTCOMES.salt + of_text(text).encode() + b"\0" + name.encode() + b"\0", digest_size=16)
    digest.update(entry.encode() + b"\0" + shared)
    return digest.digest()


def _run(
    ctx: RenderContext,
    files: dict[str, str],
    paths: list[str],
    strict_schema: bool,
    *,
    passed: Container[str] = (),
    digests: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[bytes, bytes], set[bytes], str]:
    """The failures, what the run added to OUTCOMES and used of it (for ``start`` to keep
    where this ran in a worker), and the key of the checks across files (``_across_key``).
    Each service's own file is checked alone (``_checked``, kept across runs); the other
    files' documents are read here, and the checks across files (completeness,
    kustomizations, policy against the catalog's edges, waves, critical paths) take what they
    need of each service from its outcome. Those checks passed once with the same outcomes,
    other files and catalog (``passed``: their keys), they pass again, and no outcome is read."""
    cat = ctx.catalog
    ports = {**{n: s.port for n, s in cat.services.items()}, **{n: c.port for n, c in cat.infrastructure.items()}}
    owned = {service_path(n): n for n in cat.services}
    shared = _shared(ctx)
    known = set(OUTCOMES.entries)
    keys = {name: _outcome_key(files[path], name, cat.services[name].model_dump_json(), shared)
            for path in paths if (name := owned.get(path)) is not None}  # fmt: skip
    # each service's outcome as kept (marshalled), or checked now (a new file or entry)
    fresh = {
        name: _check_and_keep(ctx, name, service_path(name), files[service_path(name)], ports, key)
        for name, key in keys.items()
        if key not in OUTCOMES.entries
    }
    values = {name: OUTCOMES.entries.get(key) or marshal.dumps(tuple(fresh[name])) for name, key in keys.items()}
    across = _across_key(ctx, files, paths, owned, values, strict_schema, digests)
    rechecked = False  # an outcome kept but checked again below (a port it looked up changed)
    if across in passed:
        OUTCOMES.used.update(keys.values())
        return [], {k: v for k, v in OUTCOMES.entries.items() if k not in known}, OUTCOMES.used, across
    outcomes: dict[str, Outcome] = {}
    docs: list[Doc] = []  # the other files' documents
    parse: list[str] = []
    schema: list[str] = []
    problems: list[str] = []  # NetworkPolicies not readable as pairs, in the files' order
    index: dict[tuple[str, str], str] = {}  # each base object, by (kind, name): the file it is in (the last)
    policy, deny = Policy(), False
    for path in paths:
        name = owned.get(path)
        if name is not None:
            out = fresh.get(name)
            if out is None:
                out, kept = _checked(ctx, name, path, files[path], ports, keys[name])
                if not kept:
                    values[name], rechecked = marshal.dumps(tuple(out)), True
            outcomes[name] = out
            parse += out.parse
            schema += [f"{path}: {name}: {kind} {obj}: {m}" for kind, obj, m in out.schema]
            index.update(dict.fromkeys(out.objects, path))
            problems += out.policies
            policy.ingress.update(out.ingress)
            policy.egress.update(out.egress)
            policy.from_outside.update(out.from_outside)
            policy.scraped.update(out.scraped)
            policy.to_internet.update(out.to_internet)
            deny |= out.deny
            continue
        try:
            if path.startswith(BASE + "/"):
                read = BASE_FILES(files[path])
                found = [Doc(path, "", data) for data in read["objects"]]
                schema += [f"{path}: {_owner(ctx, path)}: {kind} {obj}: {m}" for kind, obj, m in read["schema"]]
            else:
                found = [Doc(path, "", data) for data in _other_documents(path, files[path])]
        except yaml.YAMLError as exc:
            parse.append(f"{path}: {_owner(ctx, path)}: does not parse: {exc}".replace("\n", " "))
            continue
        docs += found
        for d in found:
            if path.startswith(BASE + "/") and d.kind != "Kustomization":
                index[(d.kind, d.name)] = path
            if d.kind == "NetworkPolicy":
                failed, denies, _ = _read_policy(ctx, d, policy, ports.get)
                problems += failed
                deny |= denies
    if not deny:
        problems.append(
            f"{BASE}/default-deny.yaml: platform: no default-deny NetworkPolicy (podSelector {{}}, Ingress and "
            "Egress, no rules)"
        )
    failures = parse
    failures += _complete(ctx, files, index)
    failures += _kustomizations(ctx, files, docs, index)
    failures += [f for name in sorted(outcomes) for f in outcomes[name].ports]
    failures += [f for name in sorted(outcomes) for f in outcomes[name].workloads]
    failures += _infrastructure_workloads(ctx, docs)
    failures += problems
    failures += _policy_matches_catalog(ctx, policy)
    failures += _waves(ctx, outcomes)
    failures += _flows(ctx, outcomes, policy)
    if strict_schema:
        failures += schema
    added = {k: v for k, v in OUTCOMES.entries.items() if k not in known}
    if rechecked:  # the key of the outcomes these checks took
        across = _across_key(ctx, files, paths, owned, values, strict_schema, digests)
    return failures, added, OUTCOMES.used, across


def _checked(
    ctx: RenderContext, name: str, path: str, text: str, ports: dict[str, int], key: bytes
) -> tuple[Outcome, bool]:
    """The outcome of one service's own file, and whether it was kept from an earlier run
    (under ``key``: ``_outcome_key``): it is when the file, the service's entry, the shared
    settings and every port it looked up are the same."""
    kept = OUTCOMES.get(key)
    if kept is not None and all(ports.get(w) == p for w, p in kept.consulted.items()):
        return kept, True
    return _check_and_keep(ctx, name, path, text, ports, key), False


def _check_and_keep(ctx: RenderContext, name: str, path: str, text: str, ports: dict[str, int], key: bytes) -> Outcome:
    """``_check_service``, its outcome kept under ``key`` when it depends on nothing more."""
    out, alone = _check_service(ctx, name, path, text, ports)
    if alone:
        OUTCOMES.put(key, out)
    return out


def _across_key(
    ctx: RenderContext,
    files: dict[str, str],
    paths: list[str],
    owned: dict[str, str],
    values: dict[str, bytes],
    strict_schema: bool,
    digests: Mapping[str, str] | None,
) -> str:
    """The key of the checks across files: Nexus's code, the catalog but the services'
    descriptions (``checks_json``: a service's own file shows its description, and its
    outcome's key holds it), each service file's outcome as marshalled (``values``: equal
    bytes, equal outcome; an outcome whose consulted ports held when it was kept holds while
    the catalog's ports are the same) and each other file's bytes. At 10,000 services a
    description edit found every outcome the same but one, and reading all 10,000 to check
    across them again was a second."""
    # all of Nexus's code (OUTCOMES' salt: paths.code_key), not this module's alone: the checks
    # across files call into the documents and YAML readers too, and a pass is what is kept
    digest = hashlib.blake2b(OUTCOMES.salt + f"k8s-across\0{strict_schema}\0".encode(), digest_size=16)
    digest.update(ctx.checks_json.encode())
    for path in paths:
        name = owned.get(path)
        if name is not None:
            digest.update(f"\0{path}\0".encode() + hashlib.blake2b(values[name], digest_size=16).digest())
        else:
            digest.update(f"\0{path}\0{held(files, path, digests)}".encode())
    return digest.hexdigest()


def _check_service(ctx: RenderContext, name: str, path: str, text: str, ports: dict[str, int]) -> tuple[Outcome, bool]:
    """Check one service's own file; False beside the outcome when it depends on more than the
    key and the ports it looked up (a NetworkPolicy there selecting another workload, whose
    catalog entry it reads): then it is not kept."""
    empty = Outcome([], [], [], [], [], [], [], [], [], [], [], False, None, False, {})
    try:
        read = BASE_FILES(text)
    except yaml.YAMLError as exc:
        return empty._replace(parse=[f"{path}: {name}: does not parse: {exc}".replace("\n", " ")]), True
    docs = [Doc(path, "", data) for data in read["objects"]]
    objects = {(d.kind, d.name): d for d in docs if d.kind != "Kustomization"}
    consulted: dict[str, int | None] = {}

    def port(workload: str) -> int | None:
        found = consulted[workload] = ports.get(workload)
        return found

    policy, problems, deny, alone = Policy(), [], False, True
    for d in docs:
        if d.kind == "NetworkPolicy":
            failed, denies, target = _read_policy(ctx, d, policy, port)
            problems += failed
            deny |= denies
            alone &= target in (None, name)
    dep = objects.get(("Deployment", name))
    value = get(dep.data, "metadata", "annotations", WAVE) if dep else None
    ready = {"path": ctx.catalog.platform.health.ready, "port": "http"}
    return Outcome(
        parse=[],
        ports=_ports_and_config(ctx, name, objects, port),
        workloads=_workload(dep, "Deployment", name) if dep is not None else [],
        policies=problems,
        schema=[(kind, obj, m) for kind, obj, m in read["schema"]],
        objects=list(objects),
        ingress=sorted(policy.ingress),
        egress=sorted(policy.egress),
        from_outside=sorted(policy.from_outside),
        scraped=sorted(policy.scraped),
        to_internet=sorted(policy.to_internet),
        deny=deny,
        wave=int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None,
        probed=dep is not None and get(_container(dep, name), "readinessProbe", "httpGet") == ready,
        consulted=consulted,
    ), alone


def _owner(ctx: RenderContext, path: str) -> str:
    stem = path.rsplit("/", 1)[-1].removesuffix(".yaml")
    return stem if path.startswith(f"{BASE}/services/") and stem in ctx.catalog.services else "platform"


def _container(dep: Doc, name: str) -> dict[str, Any]:
    containers = items(get(dep.data, "spec", "template", "spec", "containers"))
    return next((c for c in containers if isinstance(c, dict) and c.get("name") == name), {})


def _complete(ctx: RenderContext, files: dict[str, str], index: dict[tuple[str, str], str]) -> list[str]:
    failures = []
    for name in sorted(ctx.catalog.services):
        path = service_path(name)
        if path not in files:
            failures.append(f"{path}: {name}: missing")
            continue
        for kind in KINDS:
            obj = config_map(name) if kind == "ConfigMap" else name
            if index.get((kind, obj)) != path:
                failures.append(f"{path}: {name}: no {kind} {obj}")
    extra = {p for p in files if p.startswith(f"{BASE}/services/")} - {service_path(n) for n in ctx.catalog.services}
    failures += [f"{p}: {_owner(ctx, p)}: not a service of the catalog" for p in sorted(extra)]
    return failures


def _kustomizations(
    ctx: RenderContext, files: dict[str, str], docs: list[Doc], index: dict[tuple[str, str], str]
) -> list[str]:
    """The base lists every base file; each overlay's patches exist and patch objects the base has.
    (Tests build the overlays with the real kubectl; this catches the same slips without it.)"""
    failures = []
    for kustomization in (d for d in docs if d.kind == "Kustomization"):
        folder = kustomization.path.rsplit("/", 1)[0]
        listed = [f"{folder}/{r}" for r in kustomization.data.get("resources") or [] if not r.startswith("..")]
        listed += [f"{folder}/{p.get('path')}" for p in kustomization.data.get("patches") or []]
        failures += [
            f"{kustomization.path}: platform: lists {p}, which is not rendered" for p in listed if p not in files
        ]
        if folder == BASE:
            unlisted = {p for p in files if p.startswith(BASE + "/") and p != kustomization.path} - set(listed)
            failures += [f"{kustomization.path}: platform: does not list {p}" for p in sorted(unlisted)]
    for patch in (d for d in docs if d.path.startswith("k8s/overlays/") and d.kind != "Kustomization"):
        if (patch.kind, patch.name) not in index:
            failures.append(
                f"{patch.path}: {patch.name}: patches {patch.kind} {patch.name}, which the base does not have"
            )
        spec = patch.data.get("spec") or {}
        if patch.kind == "HorizontalPodAutoscaler" and not 1 <= spec.get("minReplicas", 1) <= spec.get(
            "maxReplicas", spec.get("minReplicas", 1)
        ):
            failures.append(
                f"{patch.path}: {patch.name}: minReplicas {spec.get('minReplicas')} is not between 1 and maxReplicas "
                f"{spec.get('maxReplicas')}"
            )
    return failures


def _ports_and_config(
    ctx: RenderContext, name: str, objects: dict[tuple[str, str], Doc], port: Callable[[str], int | None]
) -> list[str]:
    """A service's Service and container ports, its ConfigMap's URLs and settings, against the
    catalog (``port``: another workload's catalog port, as the outcome records it)."""
    failures = []
    cat = ctx.catalog
    svc = cat.services[name]
    path = service_path(name)
    if service := objects.get(("Service", name)):
        found = items(get(service.data, "spec", "ports"))
        if [(get(p, "port"), get(p, "targetPort")) for p in found] != [(svc.port, "http")]:
            failures.append(
                f"{path}: {name}: Service ports {[get(p, 'port') for p in found]} are not the catalog's "
                f"[{svc.port}] (targetPort http)"
            )
    if dep := objects.get(("Deployment", name)):
        container = _container(dep, name)
        declared = [(get(p, "name"), get(p, "containerPort")) for p in items(container.get("ports"))]
        if declared != [("http", svc.port)]:
            failures.append(f"{path}: {name}: container ports {declared} are not the catalog's [('http', {svc.port})]")
        refs = [get(e, "configMapRef", "name") for e in items(container.get("envFrom"))]
        if config_map(name) not in refs:
            failures.append(f"{path}: {name}: container does not read ConfigMap {config_map(name)}")
    if config := objects.get(("ConfigMap", config_map(name))):
        data = mapping(config.data.get("data"))
        expected = {url_variable(d): (d, port(d)) for d in svc.depends_on}
        for key in sorted(expected):
            dep_name, dep_port = expected[key]
            url = data.get(key)
            if url != f"http://{dep_name}:{dep_port}":
                failures.append(
                    f"{path}: {name}: {key} is {url!r}, not http://{dep_name}:{dep_port} ({dep_name}'s catalog port)"
                )
        for comp in sorted(svc.uses):
            key, infra = url_variable(comp), cat.infrastructure[comp]
            host, comp_port = infra.address(comp)
            address = urlsplit(str(data.get(key, "")))
            expected[key] = (comp, comp_port)
            if (address.hostname, address.port) != (host, comp_port):
                failures.append(f"{path}: {name}: {key} does not point at {comp} ({host}:{comp_port})")
            if address.password is not None:
                failures.append(f"{path}: {name}: {key} has a password in a ConfigMap; it belongs in a Secret")
        for key in sorted(k for k in data if k.endswith("_URL") and k not in expected):
            failures.append(f"{path}: {name}: {key} is not a dependency in the catalog")
        if data.get("PORT") != str(svc.port) or data.get("SERVICE_NAME") != name:
            failures.append(
                f"{path}: {name}: PORT/SERVICE_NAME are {data.get('PORT')!r}/{data.get('SERVICE_NAME')!r}, not "
                f"'{svc.port}'/'{name}'"
            )
    return failures


# Pod Security Standards "restricted", as (where, key path, required value)
_RESTRICTED = (
    ("pod", ("runAsNonRoot",), True),
    ("pod", ("seccompProfile", "type"), "RuntimeDefault"),
    ("container", ("allowPrivilegeEscalation",), False),
    ("container", ("readOnlyRootFilesystem",), True),
    ("container", ("capabilities", "drop"), ["ALL"]),
)


_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _infrastructure_workloads(ctx: RenderContext, docs: list[Doc]) -> list[str]:
    """``_workload`` of each infrastructure StatefulSet and each managed instance's provisioning Job."""
    objects = {(d.kind, d.name): d for d in docs if d.path.startswith(BASE + "/") and d.kind != "Kustomization"}
    infra = [("StatefulSet", n) for n in sorted(ctx.catalog.infrastructure)]
    infra += sorted(key for key in objects if key[0] == "Job")
    return [f for kind, name in infra if (dep := objects.get((kind, name))) for f in _workload(dep, kind, name)]


def _workload(dep: Doc, kind: str, name: str) -> list[str]:
    """No replicas beside an HPA; Pod Security "restricted"; label values and the image tag the API server accepts."""
    failures = []
    path, pod = dep.path, mapping(get(dep.data, "spec", "template", "spec"))
    labels = {
        **mapping(get(dep.data, "metadata", "labels")),
        **mapping(get(dep.data, "spec", "template", "metadata", "labels")),
    }
    for key, value in sorted(labels.items()):
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            failures.append(
                f"{path}: {name}: label {key}={value!r} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ "
                "., alphanumeric at both ends)"
            )
    containers = [*items(pod.get("initContainers")), *items(pod.get("containers"))]
    for image in sorted({str(get(c, "image")) for c in containers}):
        if not _IMAGE_TAG.match(image.rpartition(":")[2]):
            failures.append(
                f"{path}: {name}: image {image!r} has no valid tag (platform.version must be a valid image tag)"
            )
    if kind == "Deployment" and "replicas" in mapping(dep.data.get("spec")):
        failures.append(f"{path}: {name}: Deployment sets replicas, but its HorizontalPodAutoscaler owns the count")
    if pod.get("automountServiceAccountToken") is not False:
        failures.append(f"{path}: {name}: pod must set automountServiceAccountToken: false")
    if not isinstance(get(pod, "securityContext", "runAsUser"), int) or pod["securityContext"]["runAsUser"] < 10000:
        failures.append(f"{path}: {name}: pod runAsUser must be a uid of at least 10000")
    for container in containers:
        sections = {"pod": pod.get("securityContext"), "container": get(container, "securityContext")}
        for where, keys, value in _RESTRICTED:
            if get(sections[where], *keys) != value:
                where = f"container {get(container, 'name')}" if where == "container" else where
                failures.append(
                    f"{path}: {name}: {where} securityContext.{'.'.join(keys)} must be {value!r} (Pod Security "
                    "restricted)"
                )
    return failures


def _read_policy(
    ctx: RenderContext, d: Doc, policy: Policy, port: Callable[[str], int | None]
) -> tuple[list[str], bool, str | None]:
    """Add to ``policy`` every connection one NetworkPolicy allows; a rule too broad to read as
    pairs is a failure. Also whether it is a namespace-wide default deny, and the workload it
    selects (None: none it may). ``port``: a workload's catalog port."""
    failures: list[str] = []
    owner, spec = _owner(ctx, d.path), mapping(d.data.get("spec"))
    where = f"{d.path}: {owner}: NetworkPolicy {d.name}"
    if spec.get("podSelector") == {} and not spec.get("ingress") and not spec.get("egress"):
        return failures, set(map(str, items(spec.get("policyTypes")))) == {"Ingress", "Egress"}, None
    target = get(spec, "podSelector", "matchLabels", NAME)
    if not isinstance(target, str) or spec.get("podSelector") != {"matchLabels": {NAME: target}}:
        return [f"{where}: podSelector must select one workload by {NAME}"], False, None
    ns = ctx.catalog.platform.namespace
    for direction, peers_key, pairs in (("ingress", "from", policy.ingress), ("egress", "to", policy.egress)):
        for rule in map(mapping, items(spec.get(direction))):
            peers, rule_ports = (
                items(rule.get(peers_key)),
                [(mapping(p).get("protocol", "TCP"), get(p, "port")) for p in items(rule.get("ports"))],
            )
            if not peers or not rule_ports:
                failures.append(
                    f"{where}: an {direction} rule without '{peers_key}' or 'ports' allows every peer or port"
                )
                continue
            for peer in peers:
                other = get(peer, "podSelector", "matchLabels", NAME)
                if isinstance(other, str) and peer == {"podSelector": {"matchLabels": {NAME: other}}}:
                    pair = (other, target) if direction == "ingress" else (target, other)
                    if all(p == ("TCP", port(pair[1])) for p in rule_ports):
                        pairs.add(pair)
                    else:
                        failures.append(
                            f"{where}: {direction} {pair[0]} -> {pair[1]} on {rule_ports}, not {pair[1]}'s "
                            f"catalog port {port(pair[1])}"
                        )
                elif direction == "egress" and peer == _DNS and rule_ports in _DNS_PORTS:
                    pass
                elif direction == "egress" and _anywhere(peer) and (managed := _managed(ctx, target, rule_ports)):
                    pairs.update((target, comp) for comp in managed)
                elif direction == "egress" and _outside(peer) and rule_ports == [("TCP", 443)]:
                    policy.to_internet.add(target)
                elif direction == "ingress" and peer == _other_namespaces(ns) and len(peers) == 1:
                    policy.from_outside.add(target)
                elif direction == "ingress" and peer == _monitoring(ctx) and len(peers) == 1:
                    if rule_ports == [("TCP", port(target))]:
                        policy.scraped.add(target)
                    else:
                        failures.append(
                            f"{where}: ingress from Prometheus on {rule_ports}, not {target}'s catalog port "
                            f"{port(target)}"
                        )
                else:
                    failures.append(f"{where}: {direction} peer {peer} is broader than a catalog edge")
    return failures, False, target


_DNS_PORTS = ([("TCP", 53), ("UDP", 53)], [("UDP", 53), ("TCP", 53)])
_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def _outside(peer: dict[str, Any]) -> bool:
    """An ipBlock of the internet with the private ranges (where pods and nodes live) cut out."""
    block = peer.get("ipBlock") if isinstance(peer, dict) and len(peer) == 1 else None
    return isinstance(block, dict) and any(
        block.get("cidr") == cidr and items(block.get("except")) == list(cut) for cidr, cut in render_k8s.OUTSIDE
    )


def _anywhere(peer: dict[str, Any]) -> bool:
    """An ipBlock of every address: how a service reaches a managed instance, whose address the
    cluster cannot know (it may be private, in the same VPC); only ever on that instance's port."""
    return peer in ({"ipBlock": {"cidr": cidr}} for cidr, _ in render_k8s.OUTSIDE)


def _managed(ctx: RenderContext, workload: str, rule_ports: list[tuple[str, Any]]) -> list[str]:
    """The managed (external) instances ``workload`` (a service, or a provisioning Job) uses
    that a rule on exactly ``rule_ports`` reaches."""
    cat = ctx.catalog
    svc = cat.services.get(workload)
    used = sorted(svc.uses) if svc else [c for c, _ in _provisioners(ctx) if naming.provisioner(c) == workload]
    reached = [(c, cat.infrastructure[c].external) for c in used]
    return [c for c, ext in reached if ext is not None and rule_ports == [("TCP", ext.port)]]


def _provisioners(ctx: RenderContext) -> set[tuple[str, str]]:
    """(component, its provisioning Job's name) for each managed instance whose users Nexus makes."""
    cat = ctx.catalog
    return {
        (c, naming.provisioner(c))
        for c, infra in cat.infrastructure.items()
        if infra.external is not None and infra.engine in MANAGED_PROVISIONING and cat.users_of(c)
    }


def _monitoring(ctx: RenderContext) -> dict[str, Any]:
    """Prometheus's namespace (platform.monitoring), the one peer besides the edges that may reach every service."""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ctx.catalog.platform.monitoring.namespace}}
    }


def _other_namespaces(ns: str) -> dict[str, Any]:
    return {
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns]}]
        }
    }


def _policy_matches_catalog(ctx: RenderContext, policy: Policy) -> list[str]:
    """Allowed pairs == the catalog's edges (plus each service's `uses`); outside access only where declared."""
    cat, failures = ctx.catalog, []
    edges = {(e["source"], e["target"]) for e in ctx.edges}
    uses = {(n, c) for n, s in cat.services.items() for c in s.uses}
    # a managed instance has no pod in the cluster: only its users' egress can be checked
    outside = {(n, c) for n, c in uses if cat.infrastructure[c].external is not None}
    # a managed instance's provisioning Job reaches it, as its users do
    provisioning = {(job, c) for c, job in _provisioners(ctx)}
    for side, pairs in (("egress", policy.egress), ("ingress", policy.ingress)):
        expected = edges | uses | provisioning if side == "egress" else edges | (uses - outside)
        jobs = {job: f"{infrastructure_folder}/{c}.yaml" for c, job in _provisioners(ctx)}
        for source, target in sorted(expected):
            if (source, target) not in pairs:
                failures.append(
                    f"{jobs.get(source) or service_path(source)}: {source}: {side} {source} -> {target} is a catalog "
                    "edge but no NetworkPolicy allows it"
                )
        for source, target in sorted(pairs - expected):
            failures.append(
                f"{jobs.get(source) or service_path(source)}: {source}: {side} {source} -> {target} is allowed but "
                "is not in the catalog"
            )
    gateway = cat.platform.gateway
    for name in sorted(policy.from_outside ^ {gateway}):
        failures.append(
            f"{service_path(name)}: {name}: "
            + (
                "open to other namespaces but not the gateway"
                if name != gateway
                else "the gateway is not open to ingress from outside the namespace"
            )
        )
    for name in sorted(policy.scraped ^ set(cat.services)):
        failures.append(
            f"{service_path(name)}: {name}: "
            + (
                "Prometheus may reach it, but it is not a service"
                if name not in cat.services
                else f"no ingress from Prometheus (namespace {cat.platform.monitoring.namespace}) to scrape its metrics"
            )
        )
    for name in sorted(policy.to_internet ^ {n for n, s in cat.services.items() if s.externals}):
        failures.append(
            f"{service_path(name)}: {name}: egress to outside the cluster "
            + (
                "without externals in the catalog"
                if name in policy.to_internet
                else "missing for its catalog externals"
            )
        )
    return failures


def _waves(ctx: RenderContext, outcomes: dict[str, Outcome]) -> list[str]:
    """Every hard dependency (and infrastructure) syncs in an earlier wave than its dependent."""
    failures, wave = [], {}
    for name in sorted(ctx.catalog.services):
        found = outcomes[name].wave if name in outcomes else None
        if found is None:
            failures.append(f"{service_path(name)}: {name}: Deployment has no integer {WAVE} annotation")
        else:
            wave[name] = found
    wave.update({c: ctx.plan.wave_of[c] for c in ctx.catalog.infrastructure if c in ctx.plan.wave_of})
    for name, svc in sorted(ctx.catalog.services.items()):
        needs = [d for d, e in svc.depends_on.items() if e.kind == "hard"] + list(svc.uses)
        for needed in sorted(needs):
            if name in wave and needed in wave and wave[needed] >= wave[name]:
                failures.append(
                    f"{service_path(name)}: {name}: sync-wave {wave[name]} is not after {needed}'s {wave[needed]}, a "
                    "hard dependency"
                )
    return failures


def _flows(ctx: RenderContext, outcomes: dict[str, Outcome], policy: Policy) -> list[str]:
    """Every hop of every critical path: a declared edge, allowed by policy, to a service that is ready-probed."""
    cat, failures = ctx.catalog, []
    edges = {(e["source"], e["target"]) for e in ctx.edges}
    ready = cat.platform.health.ready

    def probed(name: str) -> bool:
        return name in outcomes and outcomes[name].probed

    for fname, flow in sorted(cat.flows.items()):
        hops = flow.names()
        externals = {h.external for h in flow.hops if not isinstance(h, str)}
        first = hops[0]
        if first not in policy.from_outside:
            failures.append(
                f"{service_path(first)}: {first}: flow {fname} enters here, but no NetworkPolicy lets clients in"
            )
        if not probed(first):
            failures.append(f"{service_path(first)}: {first}: flow {fname}: no readinessProbe on {ready}")
        for source, target in itertools.pairwise(hops):
            where = f"{service_path(source)}: {source}: flow {fname} hop {source} -> {target}"
            if target in externals:
                if target not in cat.services[source].externals or source not in policy.to_internet:
                    failures.append(f"{where}: external, but not declared and allowed as {source}'s egress to outside")
                continue
            if (source, target) not in edges:
                failures.append(f"{where}: not a dependency edge in the catalog")
            if not policy.allows(source, target):
                failures.append(f"{where}: not allowed by the NetworkPolicies")
            if not probed(target):
                failures.append(f"{where}: {target} has no readinessProbe on {ready}")
    return failures
