"""Jinja filters of the service template, shared by cookiecutter and `nexus generate`.

Cookiecutter loads this file through `_extensions` in cookiecutter.json; Nexus loads the same
file, so both render the template with the same filters and produce the same bytes.
"""

from __future__ import annotations

import json

from jinja2 import Environment
from jinja2.ext import Extension


def py_str(value: object) -> str:
    """A Python string literal for any text (quotes, braces, newlines, non-ASCII)."""
    return json.dumps(str(value), ensure_ascii=False)


def pkg(name: object) -> str:
    """The Python package of a service: a DNS label with '-' as '_', never starting with a digit."""
    ident = str(name).replace("-", "_")
    return ident if ident[:1].isalpha() else f"svc_{ident}"


def env_name(name: object) -> str:
    """The environment variable stem of a service name: user-auth -> USER_AUTH."""
    return pkg(name).upper()


def one_line(value: object) -> str:
    """Text safe on one comment or Markdown line."""
    return " ".join(str(value).split())


def md_quote(value: object) -> str:
    """Any text as a Markdown block quote: every line kept, none read as a heading or list."""
    return "\n".join(f"> {line}".rstrip() for line in str(value).splitlines() or [""])


FILTERS = {"py_str": py_str, "pkg": pkg, "env_name": env_name, "one_line": one_line, "md_quote": md_quote}


class NexusFilters(Extension):
    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(FILTERS)
