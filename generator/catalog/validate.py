"""Validate stage: loaded data -> a Catalog whose graph is consistent, or every problem at once.

Two passes. The schema pass is pydantic's (types, unknown keys, ports, DNS names) with its
errors rewritten into located, actionable messages. The graph pass needs the whole catalog:
references, cycles, deployment order against hard edges, and the critical paths.
"""

from __future__ import annotations

import difflib
import graphlib
import itertools
import re
import reprlib
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import CatalogError, Problem
from . import events, mesh_rules, naming, ports
from .load import Path_, Source
from .load import dotted as _dotted
from .models import CHANNEL_NAME, DNS_1035_LABEL, DNS_LABEL, FIELD_NAME, IMAGE_PREFIX, MAX_TEXT, VERSION, Catalog

# -- schema pass -------------------------------------------------------------------------------


def parse(src: Source) -> Catalog:
    """Turn loaded data into a Catalog, translating pydantic's errors to located problems."""
    try:
        return Catalog.model_validate(src.data)
    except ValidationError as exc:
        problems: dict[str, Problem] = {}
        for err in exc.errors(include_url=False):
            if _other_hop_branch(src.data, err["loc"]):
                continue
            problem = _translate(src, err)
            problems.setdefault(problem.path, problem)  # a union reports once per branch; keep one
        raise CatalogError(list(problems.values())) from exc


# A hop is `Name | ExternalHop`; pydantic tags each error with the branch it tried.
# branch tag -> whether that branch is the one meant for a non-text hop
_HOP_BRANCHES = {"constrained-str": False, "ExternalHop": True}


def _hop_branch_at(loc: tuple[Any, ...], i: int) -> bool:
    return i >= 2 and loc[i] in _HOP_BRANCHES and loc[i - 2] == "hops" and isinstance(loc[i - 1], int)


def _other_hop_branch(data: Any, loc: tuple[Any, ...]) -> bool:
    """True for an error from the union branch the author did not mean.

    Text is meant as a service name, anything else as {external: NAME}; without this a bad
    hop gets one message per branch, e.g. "expected text" for a mapping with a typo in it.
    """
    for i in range(len(loc)):
        if _hop_branch_at(loc, i):
            hop = data
            for part in loc[:i]:
                try:
                    hop = hop[part]
                except (KeyError, IndexError, TypeError):
                    return False
            return _HOP_BRANCHES[loc[i]] == isinstance(hop, str)
    return False


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Path_, bool]:
    """Drop pydantic's union-branch tags; report whether the error is about a mapping key.

    Only tags in a hop's position are dropped: a service may well be called 'str', and an
    invalid key such as 'x[1]' must stay in the path that locates it.
    """
    is_key = bool(loc) and loc[-1] == "[key]"
    path = [p for i, p in enumerate(loc) if p != "[key]" and not _hop_branch_at(loc, i)]
    return tuple(path), is_key


def _describe(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "text",
        int: "a number",
        float: "a number",
        bool: "true/false",
        type(None): "nothing (null)",
    }
    return names.get(type(value), type(value).__name__)


# A wrong value can be any size (a whole mapping, or a list that aliases expand to millions
# of items); the message shows its beginning, and the line:col says where the rest is.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxtuple = _repr.maxset = 4
_repr.maxlevel = 2


def _show(value: Any) -> str:
    shown = _repr.repr(value)  # bounded work however big the value is
    return shown if len(shown) <= 80 else shown[:77] + "..."  # and bounded length: nested parts add up


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", str(text).lower())).strip("-")[:63].strip("-") or "my-service"


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The model class that holds the field at ``path`` (to list the keys allowed there)."""
    tp: Any = Catalog
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        else:
            origin = typing.get_origin(tp)
            args = typing.get_args(tp)
            if origin is dict:
                tp = args[1]
            elif origin is list:
                tp = args[0]
            else:
                return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if len(models) == 1 else typing.get_args(tp)[0]
        else:
            return tp


_DNS_RULE = "use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
_DNS_1035_RULE = (
    "use lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, at most 63 "
    "characters"
)


def _not_a_1035_label(what: str, value: Any) -> str:
    why = (
        "a Kubernetes Service name starts with a letter"
        if _slug(value)[:1].isdigit()
        else "it becomes a Kubernetes Service, a hostname and a folder name"
    )
    return f"{what} {_show(value)} is not a DNS-1035 label ({why}); {_DNS_1035_RULE}, e.g. '{_service_slug(value)}'"


def new_name_problem(name: str, taken: Iterable[str]) -> str | None:
    """What keeps ``name`` from naming a new service, as `nexus validate` would say it (the
    catalog's own rule, models.ServiceName); None when nothing does. `nexus new` asks again at
    once instead of after its other questions."""
    from pydantic import TypeAdapter

    from .models import ServiceName

    if name in set(taken):
        return f"'{name}' is already a name in the catalog; choose another"
    try:
        TypeAdapter(ServiceName).validate_python(name)
    except ValidationError:
        return _not_a_1035_label("name", name)
    return None


def _service_slug(text: str) -> str:
    """A DNS-1035 label close to ``text``: a leading digit gets the prefix pkg() would give it."""
    slug = _slug(text)
    return slug if slug[:1].isalpha() else f"svc-{slug}"[:63].rstrip("-")


def _bare(value: Any, kind: type) -> Any:
    """What quoted text reads as without its quotes (YAML's own typing), when that is ``kind``."""
    if isinstance(value, str):
        try:
            bare = yaml.safe_load(value)
        except yaml.YAMLError:
            return None
        if type(bare) is kind:
            return bare
    return None


def _translate(src: Source, err: ErrorDetails) -> Problem:
    path, is_key = _clean_loc(err["loc"])
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    last = path[-1] if path else ""
    pattern = str(ctx.get("pattern", ""))
    if kind == "missing":
        line, col = src.where(path[:-1])  # the key is absent: point at the mapping that lacks it
        return Problem(line, col, _dotted(path), f"required key '{last}' is missing; add '{last}:' here", src.file)
    if kind == "extra_forbidden":
        model = _model_at(path[:-1])
        allowed = sorted(f.alias or n for n, f in model.model_fields.items()) if model else []
        guess = difflib.get_close_matches(str(last), allowed, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return src.problem(path, f"unknown key '{last}'; {hint}allowed here: {', '.join(allowed)}", key=True)
    if kind == "string_pattern_mismatch" and last == "handle":
        return src.problem(path, f"'{value}' is not a GitHub handle; write @user or @org/team, as CODEOWNERS does")
    what = "name" if is_key else "value"
    if kind == "string_pattern_mismatch" and pattern == DNS_1035_LABEL:
        return src.problem(path, _not_a_1035_label(what, value), key=is_key)
    if kind == "string_pattern_mismatch" and pattern == CHANNEL_NAME:
        return src.problem(
            path,
            f"channel name {_show(value)} does not fit (it becomes a subject, a stream and Python names); "
            f"{_DNS_1035_RULE}, e.g. '{_service_slug(value)}'",
            key=is_key,
        )
    if kind == "string_pattern_mismatch" and pattern == FIELD_NAME:
        fix = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", str(value).lower())).strip("_") or "field"
        fix = fix if fix[:1].isalpha() else f"f_{fix}"
        return src.problem(
            path,
            f"field name {_show(value)} is not snake_case (it becomes a Python attribute); use lower-case letters, "
            f"digits and '_', starting with a letter, e.g. '{fix}'",
            key=is_key,
        )
    if kind == "string_pattern_mismatch" and pattern == DNS_LABEL:
        return src.problem(
            path,
            f"{what} {_show(value)} is not a DNS-1123 label (it becomes a hostname and a folder name); {_DNS_RULE}, "
            f"e.g. '{_slug(value)}'",
            key=is_key,
        )
    if kind == "string_too_long" and ctx.get("max_length") == 63 and path != ("platform", "version"):
        fix = _service_slug(value)
        return src.problem(
            path, f"'{value}' is {len(value)} characters; a DNS label is at most 63, e.g. '{fix}'", key=is_key
        )
    if kind == "string_pattern_mismatch" and pattern == IMAGE_PREFIX:
        lower = str(value).lower()
        fix = (
            f"'{lower}' (lower case)"
            if lower != value and re.fullmatch(IMAGE_PREFIX, lower)
            else "'ghcr.io/my-org' or 'registry.example.com:5000/team'"
        )
        return src.problem(
            path,
            f"{_show(value)} is not an image name prefix: images are <prefix>/<service>:<version>, and a prefix is "
            "an optional registry host[:port] and lower-case path parts separated by '/', with no spaces or line "
            f"breaks; e.g. {fix}",
        )
    if kind == "string_pattern_mismatch" and pattern == VERSION:
        return src.problem(
            path,
            f"{_show(value)} is not a version the image tag, the Kubernetes label and the Python packages all accept; "
            "write MAJOR.MINOR.PATCH, optionally with -alpha, -beta, -rc or -dev and a number, e.g. '1.2.0' or "
            "'1.2.0-rc.1'",
        )
    if kind == "string_too_long":
        limit = int(ctx.get("max_length", 0))
        why = (
            " (one line of the docs; a description also goes into its Deployment's annotations, which Kubernetes "
            "bounds)"
            if limit == MAX_TEXT
            else ""
        )
        return src.problem(
            path, f"{_show(value)} is {len(value):,} characters; at most {limit:,} fit here{why}; shorten it"
        )
    if kind in {"greater_than_equal", "less_than_equal"} and last == "port":
        return src.problem(
            path,
            f"port {value} is outside 1024..65535; ports below 1024 need root and above 65535 do not exist, so pick a "
            "free one in that range",
        )
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        bound = next(iter(ctx.values()), "?")
        rel = {
            "greater_than_equal": "at least",
            "less_than_equal": "at most",
            "greater_than": "above",
            "less_than": "below",
        }[kind]
        return src.problem(path, f"{value} is out of range; it must be {rel} {bound}")
    if kind == "literal_error":
        return src.problem(path, f"{_show(value)} is not allowed here; expected {ctx.get('expected')}")
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        if len(path) >= 2 and path[-2] == "hops":
            return src.problem(path, f"a hop is a service name or {{external: NAME}}, not {_describe(value)}")
        return src.problem(path, f"expected a mapping (key: value), got {_describe(value)}")
    if kind == "list_type":
        return src.problem(path, f"expected a list ([a, b] or '- item' lines), got {_describe(value)}")
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        bare = _bare(value, int)
        fix = f"; write {bare} without quotes" if bare is not None else ""
        return src.problem(path, f"expected a whole number, got {_describe(value)} {_show(value)}{fix}")
    if kind in {"bool_type", "bool_parsing"}:
        bare = _bare(value, bool)
        fix = f"; write {str(bare).lower()} without quotes" if bare is not None else ""
        return src.problem(path, f"expected true or false, got {_describe(value)} {_show(value)}{fix}")
    if kind == "string_type":
        return src.problem(
            path, f"expected text, got {_describe(value)} {_show(value)}; quote it if it is meant as text"
        )
    if kind == "string_pattern_mismatch" and last in {"contact", "oncall"}:
        return src.problem(path, f"'{value}' is not an e-mail address; write it as name@example.com")
    if kind == "string_pattern_mismatch":
        return src.problem(path, f"'{value}' does not match the expected form {pattern}")
    if kind in {"too_short", "string_too_short"} and path == ("services",):
        gateway = (
            (src.data.get("platform") or {}).get("gateway") if isinstance(src.data.get("platform"), dict) else None
        )
        first = f"'{gateway}', the gateway" if isinstance(gateway, str) else "the gateway"
        return src.problem(path, f"the catalog has no services; add at least {first}, under 'services:'")
    if kind in {"too_short", "string_too_short"}:
        return src.problem(path, "must not be empty")
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return src.problem(path, message, key=is_key)


# -- graph pass --------------------------------------------------------------------------------


def check_graph(cat: Catalog, src: Source | None = None, assume: frozenset[str] = frozenset()) -> list[Problem]:
    """Every whole-catalog rule; returns all problems found (empty when consistent).

    ``assume`` names services that exist but failed the schema pass: references to them are
    not reported as unknown (their own problems are already reported)."""
    out: list[Problem] = []

    def problem(path: Path_, message: str, key: bool = False) -> None:
        if src is None:
            out.append(Problem(0, 0, _dotted(path), message))
        else:
            out.append(src.problem(path, message, key=key))

    services = cat.services
    names = set(services)
    known = names | assume  # what a reference may name
    stage_index = {s.name: i for i, s in enumerate(cat.stages)}

    # stages: unique names, at most one default, every listed member known and listed once
    seen_stage: dict[str, int] = {}
    for i, stage in enumerate(cat.stages):
        if stage.name in seen_stage:
            problem(
                ("stages", i, "name"),
                f"stage '{stage.name}' is already defined as stages[{seen_stage[stage.name]}]; stage names must be "
                "unique",
            )
        seen_stage.setdefault(stage.name, i)
    defaults = [i for i, s in enumerate(cat.stages) if s.default]
    for i in defaults[1:]:
        problem(("stages", i, "default"), f"only one stage may be the default; stages[{defaults[0]}] already is")

    placed: dict[str, tuple[str, Path_]] = {}
    for i, stage in enumerate(cat.stages):
        for j, name in enumerate(stage.services):
            path = ("stages", i, "services", j)
            if name not in known:
                problem(path, f"unknown service '{name}'{_did_you_mean(name, names)}")
            elif name in placed:
                problem(
                    path, f"service '{name}' is in two stages: '{placed[name][0]}' and '{stage.name}'; keep it in one"
                )
            else:
                placed[name] = (stage.name, path)
        for j, comp in enumerate(stage.infrastructure):
            if comp not in cat.infrastructure:
                problem(
                    ("stages", i, "infrastructure", j),
                    f"unknown infrastructure component '{comp}'{_did_you_mean(comp, cat.infrastructure)}",
                )
    for name, svc in sorted(services.items()):
        if svc.stage is None:
            continue
        if svc.stage not in stage_index:
            problem(("services", name, "stage"), f"unknown stage '{svc.stage}'{_did_you_mean(svc.stage, stage_index)}")
        elif name in placed and placed[name][0] != svc.stage:
            problem(
                ("services", name, "stage"),
                f"service '{name}' is in two stages: '{placed[name][0]}' (listed at {_dotted(placed[name][1])}) and "
                f"'{svc.stage}'; keep it in one",
            )
    stage_of = cat.stage_of()
    if not defaults:
        for name in sorted(names - set(stage_of)):
            problem(
                ("services", name),
                f"service '{name}' is in no deployment stage; list it under a stage's 'services', set 'stage:', or "
                "mark one stage 'default: true'",
                key=True,
            )

    infra_stage = {c: stage.name for stage in cat.stages for c in stage.infrastructure}
    for comp in sorted(set(cat.infrastructure) - set(infra_stage)):
        problem(
            ("infrastructure", comp),
            f"infrastructure component '{comp}' is in no deployment stage; list it under the first stage's "
            "'infrastructure'",
            key=True,
        )
    for comp in sorted(set(cat.infrastructure) & names):
        problem(
            ("infrastructure", comp),
            f"'{comp}' names both a service and an infrastructure component; hostnames must be unique, so rename one",
            key=True,
        )

    # each category's block of ports for new services (`nexus new`) is its own
    widest: tuple[int, int, str] | None = None
    for first, last, name in sorted((c.ports.first, c.ports.last, n) for n, c in cat.categories.items() if c.ports):
        if widest and first <= widest[1]:
            problem(
                ("categories", name, "ports"),
                f"ports {first}..{last} overlap categories.{widest[2]}.ports ({widest[0]}..{widest[1]}); give each "
                "category a block of its own, so that `nexus new` never hands one port to two categories",
            )
        if widest is None or last > widest[1]:
            widest = (first, last, name)

    # one space of ports for services and infrastructure
    used = ports.used_ports(cat)
    for taken, later in ports.clashes(cat):
        free = ports.next_free(later.port, used)
        fix = f"the next free port is {free}" if free else "pick a free port below it"
        problem(later.path, f"port {later.port} is already used by {taken.owner}; {fix}")

    # names the generator derives (packages, variables, objects, pages) are each one thing's
    out.extend(_name_clashes(cat, src))
    if cat.platform.namespace == cat.platform.monitoring.namespace:
        problem(
            ("platform", "namespace"),
            f"namespace '{cat.platform.namespace}' is also platform.monitoring.namespace; the NetworkPolicies admit "
            "all of the monitoring namespace, "
            "so the two must differ: deploy the platform into a namespace of its own",
        )

    # references from services
    for name, svc in sorted(services.items()):
        at = ("services", name)
        if svc.team not in cat.teams:
            problem(
                (*at, "team"),
                f"unknown team '{svc.team}'{_did_you_mean(svc.team, cat.teams)}; teams: {', '.join(sorted(cat.teams))}",
            )
        if svc.category not in cat.categories:
            problem(
                (*at, "category"),
                f"unknown category '{svc.category}'{_did_you_mean(svc.category, cat.categories)}; categories: "
                f"{', '.join(sorted(cat.categories))}",
            )
        for dep, edge in svc.depends_on.items():
            edge_at = (*at, "depends_on", dep)
            if dep == name:
                problem(edge_at, f"'{name}' depends on itself; remove this entry", key=True)
            elif dep not in known:
                problem(edge_at, _unknown_dependency(cat, dep, names), key=True)
            # an unknown stage is reported on its own; comparing it as "stage -1" would add
            # false "deployed later" errors
            elif (
                edge.kind == "hard"
                and stage_of.get(name) in stage_index
                and stage_of.get(dep) in stage_index
                and stage_index[stage_of[dep]] > stage_index[stage_of[name]]
            ):
                problem(
                    edge_at,
                    f"hard dependency on '{dep}' (stage '{stage_of[dep]}') from stage '{stage_of[name]}': '{dep}' is "
                    "deployed later, "
                    f"so '{name}' could never become ready; make the edge soft (called at request time) or move "
                    f"'{dep}' to stage '{stage_of[name]}' or earlier",
                    key=True,
                )
        for j, comp in enumerate(svc.uses):
            if comp not in cat.infrastructure:
                problem(
                    (*at, "uses", j),
                    f"unknown infrastructure component '{comp}'{_did_you_mean(comp, cat.infrastructure)}",
                )
            elif (
                comp in infra_stage
                and stage_of.get(name) in stage_index
                and stage_index[infra_stage[comp]] > stage_index[stage_of[name]]
            ):
                problem(
                    (*at, "uses", j),
                    f"'{comp}' is deployed in stage '{infra_stage[comp]}', after '{name}' (stage '{stage_of[name]}'); "
                    "infrastructure must come first",
                )
        for j, ext in enumerate(svc.externals):
            if ext not in cat.externals:
                problem((*at, "externals", j), f"unknown external system '{ext}'{_did_you_mean(ext, cat.externals)}")
    # a component nobody uses would run (and hold credentials) for nothing, and its NetworkPolicy
    # would admit no one: most likely a service's `uses:` forgot it
    uses = {comp for svc in services.values() for comp in svc.uses}
    for comp in sorted(set(cat.infrastructure) - uses if not assume else ()):  # a broken service may use it
        problem(
            ("infrastructure", comp),
            f"infrastructure component '{comp}' is used by no service; "
            "add it to the `uses:` of the services that need it, or remove it",
            key=True,
        )

    out.extend(_cycles(cat, src))
    mesh_rules.check(cat, lambda path, message: problem(path, message, key=True))
    events.check(
        cat, lambda path, message: problem(path, message, key=len(path) <= 2), stage_index, _did_you_mean, assume
    )

    # platform and flows
    if cat.platform.gateway not in known:
        problem(
            ("platform", "gateway"),
            f"gateway '{cat.platform.gateway}' is not a service{_did_you_mean(cat.platform.gateway, names)}",
        )
    for fname, flow in sorted(cat.flows.items()):
        base = ("flows", fname, "hops")
        hops = flow.hops
        start = hops[0]
        # an unknown gateway is reported once above, not again for every flow
        if start != cat.platform.gateway and cat.platform.gateway in known:
            problem(
                (*base, 0),
                f"flow '{fname}' starts at '{start if isinstance(start, str) else start.external}', but every flow "
                f"starts at the gateway '{cat.platform.gateway}'; put it first",
            )
        for j, hop in enumerate(hops):
            if isinstance(hop, str):
                if hop not in known:
                    problem((*base, j), f"unknown service '{hop}'{_did_you_mean(hop, names)}")
            elif hop.external not in cat.externals:
                problem(
                    (*base, j, "external"),
                    f"unknown external system '{hop.external}'{_did_you_mean(hop.external, cat.externals)}",
                )
            elif j != len(hops) - 1:
                problem((*base, j), "an external hop is not called, so nothing can follow it; make it the last hop")
        for j in range(1, len(hops)):
            prev, hop = hops[j - 1], hops[j]
            if not isinstance(prev, str) or prev not in services:
                continue
            if isinstance(hop, str):
                if hop in known and hop not in services[prev].depends_on:
                    problem(
                        (*base, j),
                        f"hop {prev} -> {hop} is not a declared dependency; add '{hop}: soft' (or hard) under "
                        f"services.{prev}.depends_on",
                    )
            elif hop.external in cat.externals and hop.external not in services[prev].externals:
                problem(
                    (*base, j),
                    f"hop {prev} -> {hop.external} (external) is not declared; add '{hop.external}' to "
                    f"services.{prev}.externals",
                )
    return out


def _cycles(cat: Catalog, src: Source | None) -> list[Problem]:
    """Report each dependency cycle in full, hard and soft edges alike.

    A call cycle can recurse without end at request time, and with hard edges it can never
    deploy. graphlib finds one cycle at a time; we cut the edge that closes it and look again.
    """
    graph = {n: {d for d in s.depends_on if d in cat.services and d != n} for n, s in cat.services.items()}
    problems: list[Problem] = []
    for _ in range(50):  # each pass removes one edge; 50 cycles is already more than anyone reads
        try:
            graphlib.TopologicalSorter(graph).prepare()
            break
        except graphlib.CycleError as exc:
            cycle: list[str] = exc.args[1]  # [a, b, ..., a] where each depends on the next
            cycle = list(reversed(cycle))  # graphlib walks predecessors; show it as "a -> b" = a depends on b
            a, b = cycle[0], cycle[1]
            kinds = [cat.services[x].depends_on[y].kind for x, y in itertools.pairwise(cycle)]
            shown = " -> ".join(cycle)
            message = f"dependency cycle: {shown} ({', '.join(kinds)}); break it by removing one of these edges"
            path = ("services", a, "depends_on", b)
            problems.append(src.problem(path, message, key=True) if src else Problem(0, 0, _dotted(path), message))
            graph[a].discard(b)
    return problems


# a dependency named after something a service reaches another way: the catalog's section it
# is in, what it is, and the service's key that names it instead
_REACHED_OTHERWISE = {
    "infrastructure": ("is infrastructure, not a service", "uses"),
    "externals": ("is an external system, not a service", "externals"),
}


def _unknown_dependency(cat: Catalog, dep: str, services: Iterable[str]) -> str:
    for section, (what, key) in _REACHED_OTHERWISE.items():
        if dep in getattr(cat, section):
            return f"'{dep}' {what}: a service that needs it lists it under {key} ({key}: [{dep}])"
    return f"depends on unknown service '{dep}'{_did_you_mean(dep, services)}"


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


_SUFFIX = {"services": "service", "infrastructure": "infra", "externals": "external"}


def _name_clashes(cat: Catalog, src: Source | None) -> list[Problem]:
    """One problem per catalog entry that would be written under a name something else already
    has (naming.clashes: fixed objects and pages first, then catalog order)."""
    reported: set[Path_] = set()
    out: list[Problem] = []
    both = set(cat.services) & set(cat.infrastructure)  # reported on their own, as hostnames
    for other, claim, kind in naming.clashes(cat):
        owner = claim[2]
        if owner is None or owner in reported or (len(owner) == 2 and owner[1] in both):
            continue
        reported.add(owner)
        if other[2] is None:
            taken = f"the name of {naming.claimant(other)}, which the generator writes"
        else:
            taken = f"what {naming.claimant(other)} is written as too"
        if kind == "docs page":
            taken += " (file names compared case-insensitively, as on macOS)"
        if owner[0] == "services" and len(owner) > 2:
            fix = f"rename service '{owner[1]}' or '{owner[-1]}'"
        else:
            fix = f"rename it, e.g. '{naming.suggest(str(owner[-1]), _SUFFIX[str(owner[0])])}'"
        message = f"{naming.claimant(claim)} would be written as {kind} '{claim[1]}', {taken}; {fix}"
        out.append(src.problem(owner, message, key=True) if src else Problem(0, 0, _dotted(owner), message))
    return out


def _salvage(src: Source) -> tuple[Catalog, frozenset[str]] | None:
    """The catalog without the services that failed the schema pass, so the graph pass can still
    run and report in the same run; None when the problems lie outside single services."""
    data = src.data
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        return None
    try:
        Catalog.model_validate(data)
        return None
    except ValidationError as exc:
        locs = [e["loc"] for e in exc.errors(include_url=False)]
    if any(len(loc) < 2 or loc[0] != "services" for loc in locs):
        return None
    broken = frozenset(str(loc[1]) for loc in locs)
    try:
        rest = Catalog.model_validate(
            {**data, "services": {k: v for k, v in data["services"].items() if k not in broken}}
        )
    except ValidationError:
        return None
    return rest, broken


def validate(src: Source) -> Catalog:
    """Schema pass then graph pass; raises CatalogError listing every problem. When only some
    services fail the schema, the graph pass still runs on the rest, so one run reports all."""
    try:
        cat = parse(src)
    except CatalogError as exc:
        salvaged = _salvage(src)
        if salvaged is None:
            raise
        rest, broken = salvaged
        raise CatalogError(exc.problems + check_graph(rest, src, assume=broken)) from exc
    problems = check_graph(cat, src)
    if problems:
        raise CatalogError(problems)
    return cat
