"""One broken catalog per validation rule, shared by test_validate (in process) and test_cli
(through the real command). Each starts from MINIMAL and breaks exactly one thing.

A case names where the error must point by *needles*: strings searched in order in the dumped
YAML, each from where the previous one starts, the last one being the token itself. That locates the token independently of the
loader, so the expected `catalog.yaml:LINE:COL` is neither hard-coded nor computed by the
code under test.
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

    def text(self) -> str:
        data = copy.deepcopy(MINIMAL)
        self.mutate(data)
        return dump(data)

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
    Case("port-below-1024", lambda d: svc(d, "auth").update(port=80), "services.auth.port", (*AUTH, "port: ", "80"), r"port 80 is outside 1024\.\.65535"),
    Case("port-above-65535", lambda d: svc(d, "auth").update(port=70000), "services.auth.port", (*AUTH, "port: ", "70000"), r"port 70000 is outside 1024\.\.65535"),
    Case("port-as-text", lambda d: svc(d, "auth").update(port="4001"), "services.auth.port", (*AUTH, "port: ", "'4001'"), r"expected a whole number, got text '4001'"),
    Case("port-as-bool", lambda d: svc(d, "auth").update(port=True), "services.auth.port", (*AUTH, "port: ", "true"), r"expected a whole number, got true/false"),
    Case("name-path-traversal", lambda d: add_service(d, "../x", 4010), "services.../x", ("\nservices:", "../x:"), r"name '\.\./x' is not a DNS-1123 label"),
    Case("name-upper-case", lambda d: add_service(d, "Media", 4010), "services.Media", ("\nservices:", "Media:"), r"name 'Media' is not a DNS-1123 label.*e\.g\. 'media'"),
    Case("name-underscore", lambda d: add_service(d, "my_media", 4010), "services.my_media", ("\nservices:", "my_media:"), r"not a DNS-1123 label.*e\.g\. 'my-media'"),
    Case("name-leading-dash", lambda d: add_service(d, "-media", 4010), "services.-media", ("\nservices:", "-media:"), r"not a DNS-1123 label"),
    Case("name-64-chars", lambda d: add_service(d, "m" * 64, 4010), "services." + "m" * 64, ("\nservices:", "m" * 64), r"is 64 characters; a DNS-1123 label is at most 63"),
    Case("name-as-dependency-value", lambda d: svc(d, "media").update(depends_on={"Auth": "hard"}), "services.media.depends_on.Auth", (*MEDIA, "Auth"), r"name 'Auth' is not a DNS-1123 label"),
    Case("unknown-key-service", lambda d: svc(d, "auth").update(prot=4009), "services.auth.prot", (*AUTH, "prot"), r"unknown key 'prot'; did you mean 'port'\? allowed here: .*category"),
    Case("unknown-key-top-level", lambda d: d.update(servces={}), "servces", ("\nservces", "servces"), r"unknown key 'servces'; did you mean 'services'\?"),
    Case("unknown-key-platform", lambda d: d["platform"].update(gatway="gateway"), "platform.gatway", ("gatway",), r"unknown key 'gatway'; did you mean 'gateway'\?"),
    Case("missing-key", lambda d: svc(d, "auth").pop("team"), "services.auth.team", (*AUTH, "port"), r"required key 'team' is missing"),
    Case("edge-kind", lambda d: svc(d, "media")["depends_on"].update(auth="strong"), "services.media.depends_on.auth.kind", (*MEDIA, "strong"), r"'strong' is not allowed here; expected 'hard' or 'soft'"),
    Case("contact-not-email", lambda d: d["teams"]["core"].update(contact="core-team"), "teams.core.contact", ("core-team",), r"'core-team' is not an e-mail address"),
    Case("hop-not-a-name", lambda d: d["flows"]["login"]["hops"].__setitem__(1, 3), "flows.login.hops[1]", ("login:", "- 3", "3"), r"a hop is a service name or \{external: NAME\}, not a number"),
    Case("hop-bad-name", lambda d: d["flows"]["login"]["hops"].__setitem__(1, "Auth"), "flows.login.hops[1]", ("login:", "Auth"), r"value 'Auth' is not a DNS-1123 label"),
    # a typo inside {external: ...}: both halves of the mistake are reported, nothing about text
    Case("hop-mapping-typo", lambda d: d["flows"]["watch"]["hops"].__setitem__(2, {"externl": "cdn"}), "flows.watch.hops[2].externl", ("watch:", "externl"), r"unknown key 'externl'; did you mean 'external'\?", count=2),
    Case("flow-without-hops", lambda d: d["flows"]["login"].update(hops=[]), "flows.login.hops", ("login:", "[]"), r"must not be empty"),
    Case("autoscaling-bounds", lambda d: d["platform"].update(autoscaling={"min_replicas": 5, "max_replicas": 2}), "platform.autoscaling", ("min_replicas",), r"min_replicas \(5\) is above max_replicas \(2\)"),
]

# -- the graph pass: every whole-catalog rule of the issue -------------------------------------
GRAPH = [
    Case("duplicate-port", lambda d: svc(d, "media").update(port=4001), "services.media.port", (*MEDIA, "4001"), r"port 4001 is already used by 'auth'; the next free port is 4002"),
    Case("unknown-dependency", lambda d: svc(d, "media")["depends_on"].update(auht="hard"), "services.media.depends_on.auht", (*MEDIA, "auht"), r"depends on unknown service 'auht' \(did you mean 'auth'\?\)"),
    Case("self-dependency", lambda d: svc(d, "media")["depends_on"].update(media="soft"), "services.media.depends_on.media", (*MEDIA, "depends_on:", "media"), r"'media' depends on itself"),
    Case("hard-dependency-on-later-stage", _later, "services.auth.depends_on.late", (*AUTH, "late"), r"hard dependency on 'late' \(stage 'apps'\) from stage 'core': 'late' is deployed later"),
    Case("hop-not-a-dependency", lambda d: d["flows"]["login"].update(hops=["gateway", "auth", "media"]), "flows.login.hops[2]", ("login:", "- media", "media"), r"hop auth -> media is not a declared dependency; add 'media: soft' \(or hard\) under services\.auth\.depends_on"),
    Case("external-hop-not-declared", lambda d: svc(d, "media").pop("externals"), "flows.watch.hops[2]", ("watch:", "external: cdn"), r"hop media -> cdn \(external\) is not declared"),
    Case("hop-unknown-service", lambda d: d["flows"]["login"].update(hops=["gateway", "atuh"]), "flows.login.hops[1]", ("login:", "atuh"), r"unknown service 'atuh' \(did you mean 'auth'\?\)"),
    Case("flow-not-at-gateway", lambda d: d["flows"]["login"].update(hops=["auth"]), "flows.login.hops[0]", ("login:", "- auth", "auth"), r"flow 'login' starts at 'auth', but every flow starts at the gateway 'gateway'"),
    Case("unknown-gateway", lambda d: d["platform"].update(gateway="gatewya"), "platform.gateway", ("gatewya",), r"gateway 'gatewya' is not a service \(did you mean 'gateway'\?\)"),
    Case("unknown-team", lambda d: svc(d, "auth").update(team="cor"), "services.auth.team", (*AUTH, "team: ", "cor"), r"unknown team 'cor' \(did you mean 'core'\?\); teams: core"),
    Case("unknown-category", lambda d: svc(d, "auth").update(category="platfrom"), "services.auth.category", (*AUTH, "platfrom"), r"unknown category 'platfrom' \(did you mean 'platform'\?\)"),
    Case("unknown-stage", lambda d: svc(d, "media").update(stage="appz"), "services.media.stage", (*MEDIA, "appz"), r"unknown stage 'appz' \(did you mean 'apps'\?\)"),
    Case("two-stages-by-lists", lambda d: d["stages"][2].update(services=["auth"]), "stages[2].services[0]", ("name: apps", "- auth", "auth"), r"service 'auth' is in two stages: 'core' and 'apps'"),
    Case("two-stages-by-key", lambda d: svc(d, "auth").update(stage="apps"), "services.auth.stage", (*AUTH, "apps"), r"service 'auth' is in two stages: 'core' \(listed at stages\[1\]\.services\[0\]\) and 'apps'"),
    Case("stage-lists-unknown-service", lambda d: d["stages"][1]["services"].append("autth"), "stages[1].services[1]", ("name: core", "autth"), r"unknown service 'autth' \(did you mean 'auth'\?\)"),
    Case("duplicate-stage-name", lambda d: d["stages"].append({"name": "apps", "title": "Again", "description": "x"}), "stages[3].name", ("- name: apps\n  title: Again", "apps"), r"stage 'apps' is already defined as stages\[2\]"),
    Case("two-default-stages", lambda d: d["stages"][1].update(default=True), "stages[2].default", ("name: apps", "default: ", "true"), r"only one stage may be the default; stages\[1\] already is"),
    Case("service-in-no-stage", lambda d: (d["stages"][2].update(default=False, services=["gateway"])), "services.media", (*MEDIA, "media"), r"service 'media' is in no deployment stage"),
    Case("unknown-infrastructure", lambda d: svc(d, "auth").update(uses=["postgress"]), "services.auth.uses[0]", (*AUTH, "postgress"), r"unknown infrastructure component 'postgress' \(did you mean 'postgres'\?\)"),
    Case("infrastructure-in-no-stage", lambda d: d["stages"][0].update(infrastructure=[]), "infrastructure.postgres", ("\ninfrastructure:", "postgres"), r"infrastructure component 'postgres' is in no deployment stage"),
    Case("unknown-external", lambda d: svc(d, "gateway").update(externals=["cnd"]), "services.gateway.externals[0]", ("cnd",), r"unknown external system 'cnd' \(did you mean 'cdn'\?\)"),
]

CASES = SCHEMA + GRAPH
