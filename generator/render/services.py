"""Render area: service code. One cookiecutter template (templates/service) rendered per service,
the shared runtime (templates/runtime) copied once, and the catalog's JSON Schema.

The service template is a real cookiecutter template: `nexus generate` renders it with the
same Jinja settings and the same filters (its local_extensions.py) that cookiecutter uses, so
a team running cookiecutter by hand gets the very files Nexus would generate.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from collections.abc import Callable
from functools import cache, partial
from types import ModuleType
from typing import Any

import jinja2

from ..catalog import events, messages
from ..catalog.graph import relays
from ..catalog.json_schema import schema_json
from ..catalog.models import Catalog, duration_ms
from ..catalog.naming import pkg
from ..errors import TemplateError
from ..paths import LINT_RULES, TEMPLATES, TOOL_BYTECODE, TOOL_CACHES, TOOL_METADATA, source_files
from .context import RenderContext, bytecode_cache

SERVICE_TEMPLATE = TEMPLATES / "service"
RUNTIME = TEMPLATES / "runtime"


@cache
def template_config() -> dict[str, Any]:
    """The template's cookiecutter.json: its defaults, Jinja settings and file policy."""
    config: dict[str, Any] = json.loads((SERVICE_TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    return config


@cache
def team_files(name: str, postgres: bool = True) -> tuple[str, ...]:
    """The files of service ``name`` that belong to its team, as paths inside its folder: created
    once when the service is first generated, never touched again. Declared once, in the
    template's own configuration (cookiecutter.json's ``_team_owned``). ``postgres``: whether
    it uses PostgreSQL (only then it has migrations); the default answers for any service."""
    shape = _team_file_shape(postgres)
    if shape is None:
        return _rendered_team_files(name, pkg(name), postgres)
    package = pkg(name)
    return tuple(p.replace(_NAME_MARK, name).replace(_PACKAGE_MARK, package) for p in shape)


def _rendered_team_files(name: str, package: str, postgres: bool) -> tuple[str, ...]:
    context = {
        "name": name,
        "package": package,
        "_team_owned": template_config()["_team_owned"],
        "resources": {"postgres": {"engine": "postgres"}} if postgres else {},
    }
    return tuple(_extensions().team_files(context))


# Rendering the paths' templates for each service cost seconds at 10,000 services; they take the
# name and the package as they are, so they are rendered once with marks in their place. Checked
# with two different pairs of marks: a path that filtered or sliced a name would differ between
# them, and then every call renders (_team_file_shape answers None).
_NAME_MARK, _PACKAGE_MARK = "\x00name\x00", "\x00package\x00"


@cache
def _team_file_shape(postgres: bool) -> tuple[str, ...] | None:
    shapes = {
        tuple(
            p.replace(name, _NAME_MARK).replace(package, _PACKAGE_MARK)
            for p in _rendered_team_files(name, package, postgres)
        )
        for name, package in (("nexusmarkname-a", "nexusmarkpackage_a"), ("nexusmarkname-b", "nexusmarkpackage_b"))
    }
    return shapes.pop() if len(shapes) == 1 else None


def team_owned(path: str) -> bool:
    """Whether ``path`` (under generated/) is one of a service's team-owned files (an entry of
    ``_team_owned`` may be a pattern: one handler module per consumed channel)."""
    parts = path.split("/", 2)
    if len(parts) != 3 or parts[0] != "services":
        return False
    exact, heads, patterns = _team_patterns(parts[1])
    rel = parts[2]
    if rel in exact:
        return True
    # most paths start as no pattern does: told at once, in C (at 10,000 services the survey
    # asks this of 160,000 files)
    return rel.startswith(heads) and any(rel.startswith(head) and fnmatch.fnmatchcase(rel, p) for head, p in patterns)


@cache
def _team_patterns(name: str) -> tuple[frozenset[str], tuple[str, ...], tuple[tuple[str, str], ...]]:
    # asked for every file of every run (compare, record): most entries are plain paths, a set
    # answers for them; a pattern is tried only on paths that start as it does (fnmatch compiles
    # each service's pattern once, which at 10,000 services costs seconds)
    files = team_files(name)
    wild = [f for f in files if any(c in f for c in "*?[")]
    patterns = tuple((re.split(r"[*?\[]", f, maxsplit=1)[0], f) for f in wild)
    return frozenset(files).difference(wild), tuple(head for head, _ in patterns), patterns


@cache
def _extensions() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nexus_service_template_extensions", SERVICE_TEMPLATE / "local_extensions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_NAME = "name-of:"  # a template named "name-of:<path>" renders <path> itself: a file *name*


class _NameLoader(jinja2.BaseLoader):
    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        if not template.startswith(_NAME):
            raise jinja2.TemplateNotFound(template)
        return template.removeprefix(_NAME), None, lambda: True


def template_env(cache: bool = False) -> jinja2.Environment:
    """The environment cookiecutter builds for this template: strict, trailing newlines kept,
    plus the template's own `_jinja2_env_vars` and filters."""
    config = template_config()
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([_NameLoader(), jinja2.FileSystemLoader(str(SERVICE_TEMPLATE))]),
        auto_reload=False,
        bytecode_cache=bytecode_cache() if cache else None,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        **config.get("_jinja2_env_vars", {}),
    )
    env.filters.update(_extensions().FILTERS)
    return env


def _template_files() -> list[str]:
    """Template-relative paths of the service template's files, sorted."""
    return sorted(
        p.relative_to(SERVICE_TEMPLATE).as_posix() for p in source_files(SERVICE_TEMPLATE / "{{cookiecutter.name}}")
    )


def service_context(ctx: RenderContext, name: str) -> dict[str, Any]:
    """The cookiecutter context of one catalog service (what `nexus new` would pass)."""
    cat = ctx.catalog
    svc = cat.services[name]
    flows: dict[str, dict[str, Any]] = {}
    for fname in ctx.flows_of[name]:
        hops = cat.flows[fname].hops
        i = hops.index(name)
        nxt = hops[i + 1] if i + 1 < len(hops) else None
        flows[fname] = {
            "next": nxt if isinstance(nxt, str) else (nxt.external if nxt else ""),
            "external": nxt is not None and not isinstance(nxt, str),
        }
    return {
        "name": name,
        "description": svc.description,
        "port": str(svc.port),
        "team": svc.team,
        "category": svc.category,
        "package": pkg(name),
        "_team_owned": template_config()["_team_owned"],
        "platform": cat.platform.name,
        "namespace": cat.platform.namespace,
        "image_registry": cat.platform.image_registry,
        "version": cat.platform.version,
        "websocket": svc.websocket,
        # one layer retries: the mesh when there is one (its retries are per edge), else the client
        "retries": "0" if cat.mesh_retries() else str(_client_retries(cat, name)),
        "retry_layer": cat.platform.mesh if cat.mesh_retries() else "client",
        # never shorter than an edge's timeout, or the client would give up before the mesh does
        "request_timeout": str(
            max(
                (duration_ms(ctx.traffic(name, d).timeout) for d in svc.depends_on),
                default=duration_ms(cat.platform.traffic.timeout),
            )
            / 1000
        ),
        "dependencies": {
            dep: {"kind": e.kind, "port": cat.services[dep].port, "websocket": cat.services[dep].websocket}
            for dep, e in sorted(svc.depends_on.items())
        },
        "resources": {comp: {"engine": cat.infrastructure[comp].engine} for comp in sorted(svc.uses)},
        "flows": flows,
        "gateway": name == cat.platform.gateway,
        # only the gateway maps the graph (what it reaches): every other spec holds its own edges
        "graph": {target: sorted(cat.services[target].depends_on) for target in relays(cat, name)}
        if name == cat.platform.gateway
        else {},
        "health": cat.platform.health.model_dump(),
        "events": events_context(cat, name, ctx.channels),
    }


def events_context(cat: Catalog, name: str, channels: events.Channels) -> dict[str, Any]:
    """What a service's event files need (empty when it neither publishes nor consumes).
    ``channels``: events.channels of ``cat``."""
    published = channels.get((name, "publishes"), [])
    consumed = channels.get((name, "subscribes"), [])
    if not published and not consumed:
        return {}
    used = sorted(set(published) | set(consumed))
    models = {ch: messages.model_class(ch, cat.events[ch].message.version) for ch in used}
    fields = {ch: {f: messages.field_type(t) for f, t in cat.events[ch].message.fields.items()} for ch in used}
    return {
        "inbox": messages.inbox(name),
        "bucket": messages.handled_bucket(name),
        "imports": sorted({t.python.split(".")[0] for ch in used for t in fields[ch].values() if "." in t.python}),
        "messages": [
            {
                "channel": ch,
                "model": models[ch],
                "version": cat.events[ch].message.version,
                "kind": cat.events[ch].kind,
                "description": cat.events[ch].description,
                "fields": [{"name": f, "python": t.python, "optional": t.optional} for f, t in fields[ch].items()],
            }
            for ch in used
        ],
        "publishes": [
            {
                "channel": ch,
                "subject": messages.subject(ch, cat.events[ch].message.version),
                "model": models[ch],
                "constant": messages.snake(ch).upper(),
                "method": messages.snake(ch),
            }
            for ch in published
        ],
        "subscribes": [
            {
                "channel": ch,
                "kind": cat.events[ch].kind,
                "stream": messages.stream(ch),
                "durable": messages.durable(name),
                "dead": messages.dead_subject(ch, name),
                "model": models[ch],
                "module": f"on_{messages.snake(ch)}",
            }
            for ch in consumed
        ],
    }


def render_events(env: jinja2.Environment, context: dict[str, Any]) -> dict[str, str]:
    """A service's event files, beside the cookiecutter template's: the messages, the wiring,
    and one team-owned handler module per consumed channel (paths as render_service's)."""
    ev = context["events"]
    if not ev:
        return {}
    base = f"{context['name']}/{context['package']}"
    variables: dict[str, Any] = {"cookiecutter": context}
    try:
        out = {
            f"{base}/messages.py": env.get_template("events/messages.py.j2").render(variables),
            f"{base}/events.py": env.get_template("events/events.py.j2").render(variables),
        }
        if ev["subscribes"]:
            out[f"{base}/handlers/__init__.py"] = env.get_template("events/handlers_init.py.j2").render(variables)
        for sub in ev["subscribes"]:
            text = env.get_template("events/handler.py.j2").render({**variables, "sub": sub})
            out[f"{base}/handlers/{sub['module']}.py"] = text
    except jinja2.TemplateError as exc:
        raise TemplateError(f"templates/service/events: {exc} (rendering {context['name']})") from exc
    return out


def compile_template(env: jinja2.Environment) -> list[tuple[str, jinja2.Template, jinja2.Template]]:
    """Each template file as (name, compiled file name, compiled content), compiled once per
    run: compiling is most of the cost, rendering 43 times is cheap."""
    try:
        # names go through the loader too (a tiny in-memory one) so the bytecode cache covers them
        return [(rel, env.get_template(_NAME + rel), env.get_template(rel)) for rel in _template_files()]
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/service/{exc.name or '?'}:{exc.lineno}: {exc.message}") from exc


def render_service(
    compiled: list[tuple[str, jinja2.Template, jinja2.Template]], context: dict[str, Any]
) -> dict[str, str]:
    """One service's files, keyed by path relative to its folder's parent (`<name>/...`)."""
    out: dict[str, str] = {}
    variables = {"cookiecutter": context}
    name = context["name"]
    migrations = _extensions().uses_postgres(context)
    for rel, path_template, template in compiled:
        if not migrations and rel.split("/", 1)[1].startswith(_extensions().MIGRATIONS):
            continue  # what the template's post-generation hook does under cookiecutter
        try:
            out[path_template.render(variables)] = template.render(variables)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"templates/service/{rel}:{exc.lineno}: {exc.message} (rendering {name})") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"templates/service/{rel}:{_line(exc, rel)}: {exc} (rendering {name})") from exc
    return out


def _line(exc: BaseException, rel: str) -> int | str:
    tb = exc.__traceback__
    line: int | str = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith(rel):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _runtime() -> dict[str, str]:
    return {
        f"runtime/{p.relative_to(RUNTIME).as_posix()}": p.read_text(encoding="utf-8") for p in source_files(RUNTIME)
    }


def render(ctx: RenderContext) -> dict[str, str]:
    renders = ctx.kept("services")  # a service's files depend on its context alone
    env: jinja2.Environment | None = None
    compiled: list[tuple[str, jinja2.Template, jinja2.Template]] | None = None
    out: dict[str, str] = {}
    for name in sorted(ctx.catalog.services):
        key, context = ctx.keyed(renders, [], name, partial(service_context, ctx, name))
        files = renders.get(key)
        if files is None:
            env = env or template_env(ctx.cache)
            compiled = compiled or compile_template(env)
            context = context or service_context(ctx, name)
            files = renders.put(key, {**render_service(compiled, context), **render_events(env, context)})
        for path, text in files.items():
            out[f"services/{path}"] = text
    out.update(_runtime())
    # made from the models alone (code_key names the cache): building it was a tenth of an edit's run
    schema = renders.get(renders.key("catalog.schema.json"))
    out.update(schema or renders.put(renders.key("catalog.schema.json"), {"catalog.schema.json": schema_json()}))
    renders.save()
    # what tools leave in a service's folder stays out of its image: the same list as the one
    # that keeps it out of the templates and the generated tree
    out[".dockerignore"] = "# Generated by nexus. Build context: this folder (see a service's Dockerfile).\n" + "".join(
        f"**/{name}\n" for name in [*sorted(TOOL_CACHES), f"*{TOOL_METADATA}", f"*{TOOL_BYTECODE[0]}"]
    )
    # the lint and format rules the generated code is held to, which are Nexus's own (ruff finds
    # the file above every service and the runtime)
    out["ruff.toml"] = "# Generated by nexus; `nexus generate` rewrites it.\n" + LINT_RULES.read_text(encoding="utf-8")
    return out


def _client_retries(cat: Catalog, name: str) -> int:
    """Without a mesh the client retries: the service's own setting, else the platform's.
    (Per-edge values need a mesh: the runtime has one retry count per service.)"""
    own = cat.services[name].traffic
    return own.retries if own is not None and own.retries is not None else cat.platform.traffic.retries
