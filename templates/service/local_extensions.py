"""Jinja filters of the service template, shared by cookiecutter and `nexus generate`.

Cookiecutter loads this file through `_extensions` in cookiecutter.json; Nexus loads the same
file, so both render the template with the same filters and produce the same bytes. The naming
and quoting rules themselves are Nexus's own (one source: nexus.catalog.naming,
nexus.render.text, nexus.render.pycode), so a service is named the same in its code, its manifests
and its docs, and its Python is laid out as ruff lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from jinja2 import Environment, Template
from jinja2.ext import Extension

from nexus.catalog.naming import env_name, pkg
from nexus.render.pycode import fits, py_call, py_imports, py_str, py_text_arg, py_tuple
from nexus.render.text import json_str


def one_line(value: object) -> str:
    """Text safe on one comment or Markdown line."""
    return " ".join(str(value).split())


def md_quote(value: object) -> str:
    """Any text as a Markdown block quote: every line kept, none read as a heading or list."""
    return "\n".join(f"> {line}".rstrip() for line in str(value).splitlines() or [""])


# The folder only services using PostgreSQL get (hooks/post_gen_project.py removes it otherwise).
MIGRATIONS = "migrations/"


def uses_postgres(cookiecutter: Mapping[str, Any]) -> bool:
    return any(r["engine"] == "postgres" for r in cookiecutter.get("resources", {}).values())


def team_files(cookiecutter: Mapping[str, Any]) -> list[str]:
    """The files of this service that belong to its team (cookiecutter.json's `_team_owned`,
    template paths), as paths inside the service's folder."""
    paths = [_path_template(path).render(cookiecutter=cookiecutter) for path in cookiecutter["_team_owned"]]
    return [p for p in paths if uses_postgres(cookiecutter) or not p.startswith(MIGRATIONS)]


@cache
def _path_template(path: str) -> Template:
    # compiled once: compiling is most of the cost, and Nexus asks for every service's files
    return Template(path)


FILTERS = {
    "py_str": py_str,
    "json_str": json_str,
    "py_call": py_call,
    "py_tuple": py_tuple,
    "py_text_arg": py_text_arg,
    "py_imports": py_imports,
    "fits": fits,
    "pkg": pkg,
    "env_name": env_name,
    "one_line": one_line,
    "md_quote": md_quote,
    "team_files": team_files,
}


class NexusFilters(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(FILTERS)
