"""One broken catalog per validation rule, shared by test_validate (in process) and test_cli
(through the real command). Each starts from MINIMAL and breaks exactly one thing.

A case names where the error must point by *needles*: strings searched in order in the dumped
YAML, each from where the previous one starts, the last one being the token itself. That locates
the token independently of the loader, so the expected `catalog.yaml:LINE:COL` is neither
hard-coded nor computed by the code under test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conftest import MINIMAL, dump

Data = dict[str, Any]


@dataclass
class Case:
    id: str
    mutate: Callable[[Data], object]
    path: str  # the key path the problem must name
    needles: tuple[str, ...]  # locate the token the problem must point at
    message: str  # regex the message must match
    count: int = 1  # how many problems the catalog has in all (1: the rule, nothing spurious)
    edit: Callable[[str], str] | None = None  # a change to the YAML text itself, as a person would type it

    def text(self) -> str:
        data = copy.deepcopy(MINIMAL)
        self.mutate(data)
        text = dump(data)
        return self.edit(text) if self.edit else text

    def where(self, text: str, file: str = "catalog.yaml") -> str:
        return at(text, *self.needles, file=file)


def at(text: str, *needles: str, file: str = "catalog.yaml") -> str:
    """`file:LINE:COL` of the last needle, each needle searched from where the previous starts."""
    pos = 0
    for needle in needles:
        pos = text.index(needle, pos)  # ValueError: the case's needles are wrong
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"{file}:{line}:{col}"


def svc(d: Data, name: str) -> Data:
    return d["services"][name]


def rename(d: Data, old: str, new: str) -> None:
    """Rename a service everywhere it is mentioned, so the new name is the only change."""
    d["services"] = {new if k == old else k: v for k, v in d["services"].items()}
    for s in d["services"].values():
        if "depends_on" in s:
            s["depends_on"] = {new if k == old else k: v for k, v in s["depends_on"].items()}
    for stage in d["stages"]:
        stage["services"] = [new if n == old else n for n in stage.get("services", [])]
    for flow in d["flows"].values():
        flow["hops"] = [new if h == old else h for h in flow["hops"]]


def add_service(d: Data, name: str, port: int, **extra: Any) -> None:
    d["services"][name] = {"port": port, "category": "platform", "team": "core", "description": name.title(), **extra}


def _later(d: Data) -> None:
    add_service(d, "late", 4010)  # lands in the default stage 'apps', after 'core'
    svc(d, "auth")["depends_on"] = {"late": "hard"}


AUTH = ("\n  auth:\n",)  # the service 'auth' (not the dependency of the same name)
MEDIA = ("\n  media:\n",)

# -- the schema pass: types, unknown keys, ports, DNS names --------------------------------------
SCHEMA = [
    Case(
        "port-below-1024",
        lambda d: svc(d, "auth").update(port=80),
        "services.auth.port",
        (*AUTH, "port: ", "80"),
        r"port 80 is outside 1024\.\.65535",
    ),
    Case(
        "port-above-65535",
        lambda d: svc(d, "auth").update(port=70000),
        "services.auth.port",
        (*AUTH, "port: ", "70000"),
        r"port 70000 is outside 1024\.\.65535",
    ),
    Case(
        "port-as-text",
        lambda d: svc(d, "auth").update(port="4001"),
        "services.auth.port",
        (*AUTH, "port: ", "'4001'"),
        r"expected a whole number, got text '4001'",
    ),
    Case(
        "port-as-bool",
        lambda d: svc(d, "auth").update(port=True),
        "services.auth.port",
        (*AUTH, "port: ", "true"),
        r"expected a whole number, got true/false",
    ),
    Case(
        "name-path-traversal",
        lambda d: add_service(d, "../x", 4010),
        "services.../x",
        ("\nservices:", "../x:"),
        r"name '\.\./x' is not a DNS-1035 label",
    ),
    Case(
        "name-upper-case",
        lambda d: add_service(d, "Media", 4010),
        "services.Media",
        ("\nservices:", "Media:"),
        r"name 'Media' is not a DNS-1035 label.*e\.g\. 'media'",
    ),
    Case(
        "name-underscore",
        lambda d: add_service(d, "my_media", 4010),
        "services.my_media",
        ("\nservices:", "my_media:"),
        r"not a DNS-1035 label.*e\.g\. 'my-media'",
    ),
    Case(
        "name-leading-dash",
        lambda d: add_service(d, "-media", 4010),
        "services.-media",
        ("\nservices:", "-media:"),
        r"not a DNS-1035 label",
    ),
    Case(
        "name-64-chars",
        lambda d: add_service(d, "m" * 64, 4010),
        "services." + "m" * 64,
        ("\nservices:", "m" * 64),
        r"is 64 characters; a DNS label is at most 63",
    ),
    Case(
        "name-as-dependency-value",
        lambda d: svc(d, "media").update(depends_on={"Auth": "hard"}),
        "services.media.depends_on.Auth",
        (*MEDIA, "Auth"),
        r"name 'Auth' is not a DNS-1123 label",
    ),
    Case(
        "unknown-key-service",
        lambda d: svc(d, "auth").update(prot=4009),
        "services.auth.prot",
        (*AUTH, "prot"),
        r"unknown key 'prot'; did you mean 'port'\? allowed here: .*category",
    ),
    Case(
        "unknown-key-top-level",
        lambda d: d.update(servces={}),
        "servces",
        ("\nservces", "servces"),
        r"unknown key 'servces'; did you mean 'services'\?",
    ),
    Case(
        "unknown-key-platform",
        lambda d: d["platform"].update(gatway="gateway"),
        "platform.gatway",
        ("gatway",),
        r"unknown key 'gatway'; did you mean 'gateway'\?",
    ),
    Case(
        "missing-key",
        lambda d: svc(d, "auth").pop("team"),
        "services.auth.team",
        (*AUTH, "port"),
        r"required key 'team' is missing",
    ),
    Case(
        "edge-kind",
        lambda d: svc(d, "media")["depends_on"].update(auth="strong"),
        "services.media.depends_on.auth.kind",
        (*MEDIA, "strong"),
        r"'strong' is not allowed here; expected 'hard' or 'soft'",
    ),
    Case(
        "contact-not-email",
        lambda d: d["teams"]["core"].update(contact="core-team"),
        "teams.core.contact",
        ("core-team",),
        r"'core-team' is not an e-mail address",
    ),
    Case(
        "hop-not-a-name",
        lambda d: d["flows"]["login"]["hops"].__setitem__(1, 3),
        "flows.login.hops[1]",
        ("login:", "- 3", "3"),
        r"a hop is a service name or \{external: NAME\}, not a number",
    ),
    Case(
        "hop-bad-name",
        lambda d: d["flows"]["login"]["hops"].__setitem__(1, "Auth"),
        "flows.login.hops[1]",
        ("login:", "Auth"),
        r"value 'Auth' is not a DNS-1123 label",
    ),
    # a typo inside {external: ...}: both halves of the mistake are reported, nothing about text
    Case(
        "hop-mapping-typo",
        lambda d: d["flows"]["watch"]["hops"].__setitem__(2, {"externl": "cdn"}),
        "flows.watch.hops[2].externl",
        ("watch:", "externl"),
        r"unknown key 'externl'; did you mean 'external'\?",
        count=2,
    ),
    Case(
        "blank-description",
        lambda d: svc(d, "media").update(description=" \t "),
        "services.media.description",
        (*MEDIA, "description:", '" \\t "'),
        r"must not be blank \(it holds only whitespace\); write the text",
    ),
    Case(
        "flow-without-hops",
        lambda d: d["flows"]["login"].update(hops=[]),
        "flows.login.hops",
        ("login:", "[]"),
        r"must not be empty",
    ),
    Case(
        "autoscaling-bounds",
        lambda d: d["platform"].update(autoscaling={"min_replicas": 5, "max_replicas": 2}),
        "platform.autoscaling",
        ("min_replicas",),
        r"min_replicas \(5\) is above max_replicas \(2\)",
    ),
]

# -- the graph pass: every whole-catalog rule of the issue -------------------------------------
GRAPH = [
    Case(
        "duplicate-port",
        lambda d: svc(d, "media").update(port=4001),
        "services.media.port",
        (*MEDIA, "4001"),
        r"port 4001 is already used by 'auth'; the next free port is 4002",
    ),
    Case(
        "unknown-dependency",
        lambda d: svc(d, "media")["depends_on"].update(auht="hard"),
        "services.media.depends_on.auht",
        (*MEDIA, "auht"),
        r"depends on unknown service 'auht' \(did you mean 'auth'\?\)",
    ),
    Case(
        "infrastructure-as-dependency",
        lambda d: svc(d, "media")["depends_on"].update(postgres="hard"),
        "services.media.depends_on.postgres",
        (*MEDIA, "postgres"),
        r"'postgres' is infrastructure, not a service: a service that needs it lists it under uses "
        r"\(uses: \[postgres\]\)",
    ),
    Case(
        "external-as-dependency",
        lambda d: svc(d, "media")["depends_on"].update(cdn="soft"),
        "services.media.depends_on.cdn",
        (*MEDIA, "cdn"),
        r"'cdn' is an external system, not a service: a service that needs it lists it under externals",
    ),
    Case(
        "self-dependency",
        lambda d: svc(d, "media")["depends_on"].update(media="soft"),
        "services.media.depends_on.media",
        (*MEDIA, "depends_on:", "media"),
        r"'media' depends on itself",
    ),
    Case(
        "hard-dependency-on-later-stage",
        _later,
        "services.auth.depends_on.late",
        (*AUTH, "late"),
        r"hard dependency on 'late' \(stage 'apps'\) from stage 'core': 'late' is deployed later",
    ),
    Case(
        "hop-not-a-dependency",
        lambda d: d["flows"]["login"].update(hops=["gateway", "auth", "media"]),
        "flows.login.hops[2]",
        ("login:", "- media", "media"),
        r"hop auth -> media is not a declared dependency; add 'media: soft' \(or hard\) under "
        r"services\.auth\.depends_on",
    ),
    Case(
        "external-hop-not-declared",
        lambda d: svc(d, "media").pop("externals"),
        "flows.watch.hops[2]",
        ("watch:", "external: cdn"),
        r"hop media -> cdn \(external\) is not declared",
    ),
    Case(
        "hop-unknown-service",
        lambda d: d["flows"]["login"].update(hops=["gateway", "atuh"]),
        "flows.login.hops[1]",
        ("login:", "atuh"),
        r"unknown service 'atuh' \(did you mean 'auth'\?\)",
    ),
    Case(
        "flow-not-at-gateway",
        lambda d: d["flows"]["login"].update(hops=["auth"]),
        "flows.login.hops[0]",
        ("login:", "- auth", "auth"),
        r"flow 'login' starts at 'auth', but every flow starts at the gateway 'gateway'",
    ),
    Case(
        "unknown-gateway",
        lambda d: d["platform"].update(gateway="gatewya"),
        "platform.gateway",
        ("gatewya",),
        r"gateway 'gatewya' is not a service \(did you mean 'gateway'\?\)",
    ),
    Case(
        "unknown-team",
        lambda d: svc(d, "auth").update(team="cor"),
        "services.auth.team",
        (*AUTH, "team: ", "cor"),
        r"unknown team 'cor' \(did you mean 'core'\?\); teams: core",
    ),
    Case(
        "unknown-category",
        lambda d: svc(d, "auth").update(category="platfrom"),
        "services.auth.category",
        (*AUTH, "platfrom"),
        r"unknown category 'platfrom' \(did you mean 'platform'\?\)",
    ),
    Case(
        "unknown-stage",
        lambda d: svc(d, "media").update(stage="appz"),
        "services.media.stage",
        (*MEDIA, "appz"),
        r"unknown stage 'appz' \(did you mean 'apps'\?\)",
    ),
    Case(
        "two-stages-by-lists",
        lambda d: d["stages"][2].update(services=["auth"]),
        "stages[2].services[0]",
        ("name: apps", "- auth", "auth"),
        r"service 'auth' is in two stages: 'core' and 'apps'",
    ),
    Case(
        "two-stages-by-key",
        lambda d: svc(d, "auth").update(stage="apps"),
        "services.auth.stage",
        (*AUTH, "apps"),
        r"service 'auth' is in two stages: 'core' \(listed at stages\[1\]\.services\[0\]\) and 'apps'",
    ),
    Case(
        "stage-lists-unknown-service",
        lambda d: d["stages"][1]["services"].append("autth"),
        "stages[1].services[1]",
        ("name: core", "autth"),
        r"unknown service 'autth' \(did you mean 'auth'\?\)",
    ),
    Case(
        "duplicate-stage-name",
        lambda d: d["stages"].append({"name": "apps", "title": "Again", "description": "x"}),
        "stages[3].name",
        ("- name: apps\n  title: Again", "apps"),
        r"stage 'apps' is already defined as stages\[2\]",
    ),
    Case(
        "two-default-stages",
        lambda d: d["stages"][1].update(default=True),
        "stages[2].default",
        ("name: apps", "default: ", "true"),
        r"only one stage may be the default; stages\[1\] already is",
    ),
    Case(
        "service-in-no-stage",
        lambda d: d["stages"][2].update(default=False, services=["gateway"]),
        "services.media",
        (*MEDIA, "media"),
        r"service 'media' is in no deployment stage",
    ),
    Case(
        "unknown-infrastructure",
        lambda d: svc(d, "auth").update(uses=["postgres", "postgress"]),
        "services.auth.uses[1]",
        (*AUTH, "postgress"),
        r"unknown infrastructure component 'postgress' \(did you mean 'postgres'\?\)",
    ),
    Case(
        "infrastructure-in-no-stage",
        lambda d: d["stages"][0].update(infrastructure=[]),
        "infrastructure.postgres",
        ("\ninfrastructure:", "postgres"),
        r"infrastructure component 'postgres' is in no deployment stage",
    ),
    Case(
        "infrastructure-unused",
        lambda d: svc(d, "auth").update(uses=[]),
        "infrastructure.postgres",
        ("\ninfrastructure:", "postgres"),
        r"infrastructure component 'postgres' is used by no service; add it to the `uses:` of the services",
    ),
    Case(
        "infrastructure-external-host",
        lambda d: d["infrastructure"]["postgres"].update(
            external={"host": "db_prod.example.com", "port": 5432, "secret": "pg-admin"}
        ),
        "infrastructure.postgres.external.host",
        ("\ninfrastructure:", "db_prod"),
        r"'db_prod.example.com' does not match",
    ),
    Case(
        "infrastructure-external-no-secret",
        lambda d: d["infrastructure"]["postgres"].update(external={"host": "db.example.com", "port": 5432}),
        "infrastructure.postgres.external.secret",
        ("\ninfrastructure:", "external:", "host"),
        r"required key 'secret' is missing; add 'secret:' here",
    ),
    Case(
        "unknown-external",
        lambda d: svc(d, "gateway").update(externals=["cnd"]),
        "services.gateway.externals[0]",
        ("cnd",),
        r"unknown external system 'cnd' \(did you mean 'cdn'\?\)",
    ),
]


def _infrastructure(d: Data, name: str, port: int = 6379) -> None:
    """Add an infrastructure component, deployed in the first stage (so only its name can be wrong)."""
    d["infrastructure"][name] = {"kind": "cache", "description": "Cache", "port": port}
    d["stages"][0]["infrastructure"].append(name)
    svc(d, "auth")["uses"].append(name)  # used, or the catalog has a second problem


def _key(old: str, new: str) -> Callable[[str], str]:
    """Respell a key in the YAML text as a person would type it (the dumper would quote it)."""

    def edit(text: str) -> str:
        assert text.count(f"\n  {old}:\n") == 1, old
        return text.replace(f"\n  {old}:\n", f"\n  {new}:\n")

    return edit


def _merge(text: str) -> str:
    """media takes auth's keys through a YAML 1.1 merge key."""
    text = text.replace("\n  auth:\n", "\n  auth: &auth\n", 1)
    return text.replace("\n  media:\n", "\n  media:\n    <<: *auth\n", 1)


def _add(name: str, port: int = 4010) -> Callable[[Data], None]:
    return lambda d: add_service(d, name, port)


def _named(name: str, *extra: str) -> tuple[str, ...]:
    return ("\nservices:", f"\n  {name}:", name, *extra)


LONG = "x" * 1_000_000  # a 1 MB description: a Deployment annotation over Kubernetes' 256 KiB

# -- names and values that validated but broke later (issue 12) ---------------------------------
NAMES = [
    # a Kubernetes Service name is a DNS-1035 label: it starts with a letter
    Case(
        "name-leading-digit",
        _add("3d-render"),
        "services.3d-render",
        _named("3d-render"),
        r"name '3d-render' is not a DNS-1035 label \(a Kubernetes Service name starts with a letter\).*e\.g\. "
        r"'svc-3d-render'",
    ),
    Case(
        "name-all-digits",
        _add("123"),
        "services.123",
        ("\nservices:", "'123'"),
        r"name '123' is not a DNS-1035 label.*e\.g\. 'svc-123'",
    ),
    Case(
        "infrastructure-leading-digit",
        lambda d: _infrastructure(d, "9db"),
        "infrastructure.9db",
        ("\ninfrastructure:", "9db:"),
        r"name '9db' is not a DNS-1035 label.*e\.g\. 'svc-9db'",
    ),
    # 1abc would be package svc_1abc, as svc-1abc is: refused as a name first, nothing else reported
    Case(
        "same-package-1abc-svc-1abc",
        lambda d: (add_service(d, "1abc", 4010), add_service(d, "svc-1abc", 4011)),
        "services.1abc",
        _named("1abc"),
        r"name '1abc' is not a DNS-1035 label",
    ),
    # the package a service becomes (naming.pkg)
    Case(
        "package-keyword-import",
        _add("import"),
        "services.import",
        _named("import"),
        r"service 'import' becomes the Python package 'import', but 'import' is a Python keyword.*e\.g\. "
        r"'import-service'",
    ),
    Case(
        "package-keyword-class",
        _add("class"),
        "services.class",
        _named("class"),
        r"Python package 'class', but 'class' is a Python keyword",
    ),
    Case(
        "package-stdlib-json",
        _add("json"),
        "services.json",
        _named("json"),
        r"Python package 'json', but 'json' is a module of Python's standard library",
    ),
    Case(
        "package-stdlib-test",
        _add("test"),
        "services.test",
        _named("test"),
        r"Python package 'test', but 'test' is a module of Python's standard library",
    ),
    Case(
        "package-stdlib-removed-later",
        _add("telnetlib"),
        "services.telnetlib",
        _named("telnetlib"),
        r"'telnetlib' is a module of Python's standard library",
    ),
    Case(
        "package-own-nexus-runtime",
        _add("nexus-runtime"),
        "services.nexus-runtime",
        _named("nexus-runtime"),
        r"Python package 'nexus_runtime', but 'nexus_runtime' is Nexus's own package",
    ),
    Case(
        "package-own-nexus",
        _add("nexus"),
        "services.nexus",
        _named("nexus"),
        r"Python package 'nexus', but 'nexus' is Nexus's own package",
    ),
    Case(
        "package-runtime-import",
        _add("fastapi"),
        "services.fastapi",
        _named("fastapi"),
        r"'fastapi' is a package the runtime or the services' tests import",
    ),
    Case(
        "package-test-tooling-import",
        _add("pytest"),
        "services.pytest",
        _named("pytest"),
        r"'pytest' is a package the runtime or the services' tests import",
    ),
    Case(
        "distribution-runtime-dependency",
        _add("python-dotenv"),
        "services.python-dotenv",
        _named("python-dotenv"),
        r"'python-dotenv' is a distribution the runtime or the services' tests need",
    ),
    Case(
        "package-service-tests-folder",
        _add("tests"),
        "services.tests",
        _named("tests"),
        r"'tests' is already the folder of the service's own tests",
    ),
    Case(
        "package-service-test-module",
        _add("test-health"),
        "services.test-health",
        _named("test-health"),
        r"'test_health' is already a module of the service's own tests",
    ),
    # names of objects the generator writes besides each service's own (naming.claims)
    Case(
        "object-allow-nothing",
        _add("allow-nothing"),
        "services.allow-nothing",
        _named("allow-nothing"),
        r"would be written as AuthorizationPolicy \(Istio\) 'allow-nothing', the name of the policy that closes every "
        r"workload.*e\.g\. 'allow-nothing-service'",
    ),
    Case(
        "object-default-deny",
        _add("default-deny"),
        "services.default-deny",
        _named("default-deny"),
        r"would be written as NetworkPolicy 'default-deny', the name of the namespace-wide default deny",
    ),
    Case(
        "object-postgres-ingress",
        _add("postgres-ingress"),
        "services.postgres-ingress",
        _named("postgres-ingress"),
        r"would be written as NetworkPolicy 'postgres-ingress', what infrastructure 'postgres' is written as too",
    ),
    Case(
        "object-prometheus-scrape",
        _add("prometheus-scrape"),
        "services.prometheus-scrape",
        _named("prometheus-scrape"),
        r"AuthorizationPolicy \(Istio\) 'prometheus-scrape', the name of the policy that admits Prometheus",
    ),
    Case(
        "object-linkerd-control-plane",
        _add("linkerd-control-plane"),
        "services.linkerd-control-plane",
        _named("linkerd-control-plane"),
        r"NetworkPolicy 'linkerd-control-plane'",
    ),
    Case(
        "object-edge-rule",
        _add("auth-from-media"),
        "services.auth-from-media",
        _named("auth-from-media"),
        r"DestinationRule \(Istio\) 'auth-from-media', what the edge media -> auth is written as too",
    ),
    Case(
        "object-infrastructure-name",
        lambda d: _infrastructure(d, "allow-nothing"),
        "infrastructure.allow-nothing",
        ("\ninfrastructure:", "allow-nothing:"),
        r"infrastructure 'allow-nothing' would be written as AuthorizationPolicy \(Istio\) 'allow-nothing'.*e\.g\. "
        r"'allow-nothing-infra'",
    ),
    Case(
        "docs-page-readme",
        _add("readme"),
        "services.readme",
        _named("readme"),
        r"docs page 'docs/services/readme\.md', the name of the services index.*case-insensitively",
    ),
    Case(
        "docs-page-service-template",
        _add("service-template"),
        "services.service-template",
        _named("service-template"),
        r"docs page 'docs/services/service-template\.md', the name of the service-template page",
    ),
    # the namespace the platform is deployed into
    Case(
        "namespace-kube-system",
        lambda d: d["platform"].update(namespace="kube-system"),
        "platform.namespace",
        ("namespace: ", "kube-system"),
        r"namespace 'kube-system' belongs to Kubernetes",
    ),
    Case(
        "namespace-kube-prefix",
        lambda d: d["platform"].update(namespace="kube-anything"),
        "platform.namespace",
        ("namespace: ", "kube-anything"),
        r"namespace 'kube-anything' belongs to Kubernetes",
    ),
    Case(
        "namespace-default",
        lambda d: d["platform"].update(namespace="default"),
        "platform.namespace",
        ("namespace: ", "default"),
        r"namespace 'default' belongs to Kubernetes",
    ),
    Case(
        "namespace-istio-system",
        lambda d: d["platform"].update(namespace="istio-system"),
        "platform.namespace",
        ("namespace: ", "istio-system"),
        r"namespace 'istio-system' belongs to Kubernetes or to the mesh",
    ),
    Case(
        "namespace-monitoring",
        lambda d: d["platform"].update(namespace="monitoring"),
        "platform.namespace",
        ("namespace: ", "monitoring"),
        r"namespace 'monitoring' is also platform\.monitoring\.namespace",
    ),
    Case(
        "namespace-monitoring-set",
        lambda d: d["platform"].update(namespace="demo", monitoring={"namespace": "demo"}),
        "platform.namespace",
        ("namespace: ", "demo"),
        r"namespace 'demo' is also platform\.monitoring\.namespace",
    ),
    # image references: the Dockerfile injection of the issue, and the distribution grammar
    Case(
        "image-registry-newline",
        lambda d: d["platform"].update(image_registry="ghcr.io/x\nRUN touch /tmp/p"),
        "platform.image_registry",
        ("image_registry: ", "'ghcr"),
        r"'ghcr\.io/x\\nRUN touch /tmp/p' is not an image name prefix.*no spaces or line breaks",
    ),
    Case(
        "image-registry-upper-case",
        lambda d: d["platform"].update(image_registry="GHCR.io/Nexus-COS"),
        "platform.image_registry",
        ("image_registry: ", "GHCR"),
        r"'GHCR\.io/Nexus-COS' is not an image name prefix.*e\.g\. 'ghcr\.io/nexus-cos' \(lower case\)",
    ),
    Case(
        "image-registry-with-tag",
        lambda d: d["platform"].update(image_registry="ghcr.io/x:1"),
        "platform.image_registry",
        ("image_registry: ", "ghcr.io/x:1"),
        r"is not an image name prefix",
    ),
    Case(
        "image-registry-too-long",
        lambda d: d["platform"].update(image_registry="r/" + "x" * 190),
        "platform.image_registry",
        ("image_registry: ", "r/x"),
        r"is 192 characters; at most 191 fit here",
    ),
    Case(
        "version-injection",
        lambda d: d["platform"].update(version="1.0.0\nRUN touch /tmp/p"),
        "platform.version",
        ("  version: ", "'1.0.0"),
        r"'1\.0\.0\\nRUN touch /tmp/p' is not a version.*MAJOR\.MINOR\.PATCH",
    ),
    Case(
        "version-build-metadata",
        lambda d: d["platform"].update(version="1.0.0+build.5"),
        "platform.version",
        ("  version: ", "1.0.0+"),
        r"'1\.0\.0\+build\.5' is not a version the image tag",
    ),
    Case(
        "version-not-semver",
        lambda d: d["platform"].update(version="latest"),
        "platform.version",
        ("  version: ", "latest"),
        r"'latest' is not a version",
    ),
    Case(
        "version-unknown-pre-release",
        lambda d: d["platform"].update(version="1.0.0-foo"),
        "platform.version",
        ("  version: ", "1.0.0-foo"),
        r"'1\.0\.0-foo' is not a version",
    ),
    # bounded text
    Case(
        "description-1-mb",
        lambda d: svc(d, "auth").update(description=LONG),
        "services.auth.description",
        (*AUTH, "description: ", "xxx"),
        r"is 1,000,000 characters; at most 1,000 fit here",
    ),
    Case(
        "description-1001-chars",
        lambda d: svc(d, "auth").update(description="y" * 1001),
        "services.auth.description",
        (*AUTH, "description: ", "yyy"),
        r"is 1,001 characters; at most 1,000",
    ),
    # one space of ports (catalog.ports)
    Case(
        "port-of-infrastructure",
        lambda d: svc(d, "media").update(port=5432),
        "services.media.port",
        (*MEDIA, "5432"),
        r"port 5432 is already used by infrastructure 'postgres'; the next free port is 5433",
    ),
    Case(
        "port-of-other-infrastructure",
        lambda d: _infrastructure(d, "redis", 5432),
        "infrastructure.redis.port",
        ("redis:", "5432"),
        r"port 5432 is already used by infrastructure 'postgres'; the next free port is 5433",
    ),
    # strict types: a quoted number or boolean is text, everywhere
    Case(
        "quoted-min-replicas",
        lambda d: d["platform"].update(autoscaling={"min_replicas": "2"}),
        "platform.autoscaling.min_replicas",
        ("min_replicas: ", "'2'"),
        r"expected a whole number, got text '2'; write 2 without quotes",
    ),
    Case(
        "quoted-cpu-percent",
        lambda d: svc(d, "auth").update(autoscaling={"cpu_percent": "70"}),
        "services.auth.autoscaling.cpu_percent",
        (*AUTH, "'70'"),
        r"got text '70'; write 70 without quotes",
    ),
    Case(
        "quoted-retries",
        lambda d: svc(d, "media")["depends_on"].update(auth={"kind": "hard", "retries": "3"}),
        "services.media.depends_on.auth.retries",
        (*MEDIA, "'3'"),
        r"got text '3'; write 3 without quotes",
    ),
    Case(
        "quoted-port-range",
        lambda d: d["categories"]["platform"].update(ports={"from": "4000", "to": 4100}),
        "categories.platform.ports.from",
        ("ports:", "'4000'"),
        r"got text '4000'; write 4000 without quotes",
    ),
    Case(
        "quoted-boolean",
        lambda d: svc(d, "media").update(websocket="true"),
        "services.media.websocket",
        (*MEDIA, "'true'"),
        r"expected true or false, got text 'true'; write true without quotes",
    ),
    Case(
        "number-as-boolean",
        lambda d: svc(d, "media").update(session_affinity=1),
        "services.media.session_affinity",
        (*MEDIA, "session_affinity: ", "1"),
        r"expected true or false, got a number 1",
    ),
    Case(
        "quoted-catalog-version",
        lambda d: d.update(version="1"),
        "version",
        ("'1'",),
        r"'1' is not allowed here; expected 1",
    ),
    # nothing to generate: one error, not one per reference
    Case(
        "services-empty",
        lambda d: d.update(services={}),
        "services",
        ("\nservices: ", "{}"),
        r"the catalog has no services; add at least 'gateway', the gateway",
    ),
    Case(
        "services-null",
        lambda d: d.update(services=None),
        "services",
        ("\nservices: ", "null"),
        r"expected a mapping \(key: value\), got nothing \(null\)",
    ),
]

# -- keys as written: the loader refuses what YAML 1.1 would silently retype ---------------------
KEYS = [
    Case(
        "key-hexadecimal",
        _add("x1f"),
        "services.0x1f",
        ("\nservices:", "\n  0x1f:", "0x1f"),
        r"key '0x1f' is read by YAML as the number 31, not as the text '0x1f'",
        edit=_key("x1f", "0x1f"),
    ),
    Case(
        "key-octal",
        _add("o17"),
        "services.017",
        ("\nservices:", "\n  017:", "017"),
        r"key '017' is read by YAML as the number 15",
        edit=_key("o17", "017"),
    ),
    Case(
        "key-on",
        _add("xon"),
        "services.on",
        ("\nservices:", "\n  on:", "on"),
        r"key 'on' is read by YAML as true, not as the text 'on'; .*quote it \(\"on\"\)",
        edit=_key("xon", "on"),
    ),
    Case(
        "key-null",
        _add("xnull"),
        "services.~",
        ("\nservices:", "\n  ~:", "~"),
        r"key '~' is read by YAML as null",
        edit=_key("xnull", "~"),
    ),
    Case(
        "key-in-depends-on",
        lambda d: svc(d, "media")["depends_on"].update(yes="soft"),
        "services.media.depends_on.yes",
        (*MEDIA, "yes"),
        r"key 'yes' is read by YAML as true",
        edit=lambda t: t.replace("'yes': soft", "yes: soft"),
    ),
    Case(
        "merge-key",
        lambda d: None,
        "services.media.<<",
        (*MEDIA, "<<"),
        r"merge keys \('<<'\) are not supported.*write the keys out, or use an alias for a whole value",
        edit=_merge,
    ),
]


# -- events (issue 16) ----------------------------------------------------------------------------


def _events(d: Data, **channel: Any) -> None:
    """A broker in the first stage and one valid channel: auth publishes, media consumes."""
    d["infrastructure"]["nats"] = {"kind": "message-queue", "description": "NATS", "port": 4222}
    d["stages"][0]["infrastructure"].append("nats")
    for name in ("auth", "media", "gateway"):
        svc(d, name)["uses"] = [*svc(d, name).get("uses", []), "nats"]
    base = {
        "kind": "queue",
        "description": "Signed in",
        "message": {"version": 1, "fields": {"user_id": "string", "at": "datetime"}},
        "publishers": ["auth"],
        "subscribers": ["media"],
    }
    d["events"] = {"signed-in": {**base, **channel}}


def _ev(**channel: Any) -> Callable[[Data], None]:
    return lambda d: _events(d, **channel)


EVENTS_AT = ("\nevents:", "\n  signed-in:")
EVENTS = [
    Case(
        "event-unknown-publisher",
        _ev(publishers=["auht"]),
        "events.signed-in.publishers[0]",
        (*EVENTS_AT, "auht"),
        r"unknown service 'auht' \(did you mean 'auth'\?\)",
    ),
    Case(
        "event-nobody-publishes",
        _ev(publishers=[]),
        "events.signed-in.publishers",
        (*EVENTS_AT, "publishers:", "[]"),
        r"nobody publishes on channel 'signed-in'; list the services that do under 'publishers:'",
    ),
    Case(
        "event-nobody-consumes",
        lambda d: (_events(d), d["events"]["signed-in"].pop("subscribers")),
        "events.signed-in",
        (*EVENTS_AT, "signed-in"),
        r"nobody consumes channel 'signed-in'",
    ),
    Case(
        "event-schema-does-not-parse",
        _ev(message={"version": 1, "fields": {"user_id": "strng"}}),
        "events.signed-in.message.fields.user_id",
        (*EVENTS_AT, "user_id:", "strng"),
        r"field type 'strng' does not parse; write string, integer, number, boolean, datetime, uuid; list\[T\]",
    ),
    Case(
        "event-list-of-unknown",
        _ev(message={"version": 1, "fields": {"tags": "list[str]"}}),
        "events.signed-in.message.fields.tags",
        (*EVENTS_AT, "tags:", "list[str]"),
        r"field type 'list\[str\]' does not parse",
    ),
    Case(
        "event-field-keyword",
        _ev(message={"version": 1, "fields": {"class": "string"}}),
        "events.signed-in.message.fields.class",
        (*EVENTS_AT, "class"),
        r"field 'class' is a Python keyword",
    ),
    Case(
        "event-field-name",
        _ev(message={"version": 1, "fields": {"userId": "string"}}),
        "events.signed-in.message.fields.userId",
        (*EVENTS_AT, "userId"),
        r"field name 'userId' is not snake_case.*e\.g\. 'userid'",
    ),
    Case(
        "event-kind",
        _ev(kind="topic"),
        "events.signed-in.kind",
        (*EVENTS_AT, "topic"),
        r"'topic' is not allowed here; expected 'queue', 'pubsub' or 'stream'",
    ),
    Case(
        "event-duplicate-channel",
        _ev(),
        "events.signed-in",
        (*EVENTS_AT, "kind: pubsub", "\n  signed-in:", "signed-in"),
        r"duplicate key 'signed-in'",
        edit=lambda t: t.replace("\n  signed-in:\n", "\n  signed-in:\n    kind: pubsub\n  signed-in:\n", 1),
    ),
    Case(
        "event-queue-two-consumers",
        _ev(subscribers=["media", "gateway"]),
        "events.signed-in.subscribers",
        (*EVENTS_AT, "subscribers:", "- media"),
        r"queue 'signed-in' has 2 consuming services.*make it kind: pubsub",
    ),
    Case(
        "event-listed-twice",
        _ev(kind="pubsub", subscribers=["media", "media"]),
        "events.signed-in.subscribers[1]",
        (*EVENTS_AT, "subscribers:", "media\n    - media", "- media", "media"),
        r"'media' is listed twice in subscribers",
    ),
    Case(
        "event-consumer-before-stream",
        lambda d: (
            _events(d, publishers=["media"], subscribers=["auth"]),
            d["stages"][0]["infrastructure"].remove("nats"),
            d["stages"][2].update(infrastructure=["nats"]),
        ),
        "events.signed-in.subscribers[0]",
        (*EVENTS_AT, "subscribers:", "auth"),
        r"'auth' \(stage 'core'\) consumes 'signed-in', whose stream and consumers are created in stage 'apps' "
        r"with the broker 'nats', later",
        count=2,  # and, as for any infrastructure, auth's use of a broker deployed after it
    ),
    Case(
        "event-participant-without-broker-use",
        lambda d: (_events(d), svc(d, "media").pop("uses")),
        "events.signed-in.subscribers[0]",
        (*EVENTS_AT, "subscribers:", "media"),
        r"'media' consumes 'signed-in', so it uses the broker; add 'nats' to services.media.uses",
    ),
    Case(
        "event-no-broker",
        lambda d: (
            _events(d),
            d["infrastructure"].pop("nats"),
            d["stages"][0]["infrastructure"].remove("nats"),
            [svc(d, n)["uses"].remove("nats") for n in ("auth", "media", "gateway")],
        ),
        "events",
        ("\nevents:", "events"),
        r"events need a message broker, and no infrastructure component has kind: message-queue",
    ),
    Case(
        "event-channel-name",
        lambda d: (_events(d), d["events"].update({"Signed_In": d["events"].pop("signed-in")})),
        "events.Signed_In",
        ("\nevents:", "Signed_In"),
        r"channel name 'Signed_In' does not fit.*e\.g\. 'signed-in'",
    ),
]

CASES = SCHEMA + GRAPH + NAMES + KEYS + EVENTS
