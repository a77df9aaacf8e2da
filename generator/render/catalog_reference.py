"""The catalog reference (docs/catalog-reference.md), rendered from the JSON Schema, which is
rendered from the models: one source, so the reference cannot drift from what `validate` checks.

    python -m nexus.render.catalog_reference > docs/catalog-reference.md

tests/test_docs.py fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..catalog.json_schema import schema
from .text import md_cell

DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

INTRO = """\
<!-- Rendered by `python -m nexus.render.catalog_reference` from the catalog's JSON Schema: do not edit. -->
# Catalog reference

Every key `catalog.yaml` may hold, from the models `nexus validate` checks against (also
available as JSON Schema: `nexus schema`, and `generated/catalog.schema.json` for editors).
Unknown keys are errors. Rules that need the whole catalog (references, cycles, the
deployment order, non-overlapping port blocks) are listed under [Whole-catalog rules](#whole-catalog-rules).

A *name* is a DNS-1123 label: lower-case letters, digits and `-`, starting and ending with a
letter or digit, at most 63 characters (it becomes a hostname and a folder name).
"""

RULES = """\
## Whole-catalog rules

- Every service is in exactly one deployment stage: listed under a stage's `services`, or its
  own `stage`, or else the stage marked `default: true` (at most one).
- A `hard` dependency points at a service of the same stage or an earlier one; infrastructure
  a service `uses` is deployed in an earlier stage.
- No dependency cycles, hard or soft; no service depends on itself.
- Ports are unique across services; categories' `ports` blocks do not overlap.
- Teams, categories, stages, infrastructure, externals and dependencies named anywhere exist.
- The gateway is a service; every flow starts at it, each hop is a declared dependency of the
  one before, and an external hop comes last.
- A dependency may be written `name: hard` (or `soft`) as well as `name: {kind: hard}`.
"""


def _anchor(name: str) -> str:
    return name.lower()


def _type(prop: dict[str, Any]) -> str:
    """A property's type in words, with links to the sections of nested models."""
    if "$ref" in prop:
        name = prop["$ref"].split("/")[-1]
        return f"[{name}](#{_anchor(name)})"
    if "anyOf" in prop:
        kinds = [_type(p) for p in prop["anyOf"] if p.get("type") != "null"]
        optional = any(p.get("type") == "null" for p in prop["anyOf"])
        return " or ".join(kinds) + (" or null" if optional else "")
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "object":
        values = next(iter(prop.get("patternProperties", {}).values()), prop.get("additionalProperties"))
        return f"mapping of name → {_type(values)}" if isinstance(values, dict) else "mapping"
    if kind == "array":
        size = f" (at least {prop['minItems']})" if prop.get("minItems") else ""
        return f"list of {_type(prop.get('items', {}))}{size}"
    if kind == "string":
        if prop.get("pattern") == DNS_LABEL:
            return "name"
        if "pattern" in prop:
            return _pattern_words(prop["pattern"])
        return "text" + (" (not empty)" if prop.get("minLength") else "")
    if kind == "integer":
        bounds = [f"≥ {prop['minimum']}" if "minimum" in prop else "", f"≤ {prop['maximum']}" if "maximum" in prop else ""]
        text = ", ".join(b for b in bounds if b)
        return f"integer ({text})" if text else "integer"
    if kind == "boolean":
        return "true or false"
    return kind or "any"


def _pattern_words(pattern: str) -> str:
    """The models' few text patterns in words; any other is shown as it is."""
    if pattern.startswith("^@"):
        return "GitHub handle: `@user` or `@org/team`"
    if "@" in pattern:
        return "e-mail address"
    if pattern.startswith("^/"):
        return "URL path, starting with `/`"
    if "Mi|Gi" in pattern:
        return "Kubernetes quantity, e.g. `100m`, `128Mi`"
    return f"text matching `{pattern}`"


def _default(prop: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in prop:
        return ""
    value = prop["default"]
    if value in ({}, []):
        return "empty"
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def _order(doc: dict[str, Any]) -> list[str]:
    """Models in the order a reader meets them: breadth first from the root."""
    seen: list[str] = []
    queue = [doc]
    while queue:
        node = queue.pop(0)
        text = json.dumps(node.get("properties", {}), sort_keys=False)
        for name in _refs(text):
            if name not in seen:
                seen.append(name)
                queue.append(doc["$defs"][name])
    return seen


def _refs(text: str) -> list[str]:
    out, marker = [], '"$ref": "#/$defs/'
    start = text.find(marker)
    while start != -1:
        end = text.index('"', start + len(marker))
        out.append(text[start + len(marker) : end])
        start = text.find(marker, end)
    return out


def _section(title: str, model: dict[str, Any], level: str = "##") -> list[str]:
    lines = [f"{level} {title}", ""]
    description = model.get("description", "").strip()
    if description:
        lines += [" ".join(description.split()), ""]
    required = set(model.get("required", []))
    lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for key, prop in model.get("properties", {}).items():
        kind = _type(prop).replace("|", "\\|")  # code spans keep backslashes; only the pipes need escaping
        lines.append(f"| `{key}` | {kind} | {_default(prop, key in required)} | {md_cell(' '.join(prop.get('description', '').split()))} |")
    return [*lines, ""]


def reference_markdown() -> str:
    doc = schema()
    lines = [INTRO, *_section("Catalog (the file)", doc)]
    for name in _order(doc):
        lines += _section(name, doc["$defs"][name])
    lines.append(RULES)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
