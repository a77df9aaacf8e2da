"""The catalog reference (docs/catalog-reference.md), rendered from the JSON Schema, which is
rendered from the models: one source, so the reference cannot drift from what `validate` checks.
The schema is turned into plain data here; templates/reference/catalog-reference.md.j2 lays it out.

    python -m nexus.render.catalog_reference > docs/catalog-reference.md

tests/test_docs.py fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from ..catalog import naming
from ..catalog.json_schema import schema
from ..catalog.models import DNS_1035_LABEL, DNS_LABEL, IMAGE_PREFIX, MAX_IMAGE_PREFIX, MAX_TEXT, VERSION
from .context import make_env


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
        keys = next(iter(prop.get("patternProperties", {})), None)
        values = next(iter(prop.get("patternProperties", {}).values()), prop.get("additionalProperties"))
        name = "[service name](#names)" if keys == DNS_1035_LABEL else "name"
        return f"mapping of {name} → {_type(values)}" if isinstance(values, dict) else "mapping"
    if kind == "array":
        size = f" (at least {prop['minItems']})" if prop.get("minItems") else ""
        return f"list of {_type(prop.get('items', {}))}{size}"
    if kind == "string":
        if prop.get("pattern") == DNS_LABEL:
            return "name"
        if "pattern" in prop:
            return _pattern_words(prop["pattern"])
        if prop.get("maxLength"):
            return f"text ({prop.get('minLength', 0)} to {prop['maxLength']:,} characters)"
        return "text" + (" (not empty)" if prop.get("minLength") else "")
    if kind == "integer":
        bounds = [
            f"≥ {prop['minimum']}" if "minimum" in prop else "",
            f"≤ {prop['maximum']}" if "maximum" in prop else "",
        ]
        text = ", ".join(b for b in bounds if b)
        return f"integer ({text})" if text else "integer"
    if kind == "boolean":
        return "true or false"
    return kind or "any"


def _pattern_words(pattern: str) -> str:
    """The models' few text patterns in words; any other is shown as it is."""
    if pattern == IMAGE_PREFIX:
        return "image name prefix, lower case (see [Names](#names))"
    if pattern == VERSION:
        return "version `MAJOR.MINOR.PATCH`, optionally `-alpha`, `-beta`, `-rc` or `-dev` and a number"
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


def _section(title: str, model: dict[str, Any], level: str = "##") -> dict[str, Any]:
    required = set(model.get("required", []))
    rows = [
        {
            "key": key,
            "type": _type(prop).replace("|", "\\|"),  # code spans keep backslashes; only the pipes need escaping
            "default": _default(prop, key in required),
            "description": " ".join(prop.get("description", "").split()),
        }
        for key, prop in model.get("properties", {}).items()
    ]
    return {"level": level, "title": title, "description": " ".join(model.get("description", "").split()), "rows": rows}


def reference_markdown() -> str:
    """The page: the catalog's JSON Schema as data, laid out by templates/reference/."""
    doc = schema()
    sections = [_section("Catalog (the file)", doc)] + [_section(name, doc["$defs"][name]) for name in _order(doc)]
    return make_env().get_template("reference/catalog-reference.md.j2").render(sections=sections, names=_names())


def _codes(items: Any) -> str:
    return ", ".join(f"`{item}`" for item in items)


def _names() -> dict[str, Any]:
    """The naming rules as data, from the tables validation itself reads (nexus.catalog.naming)."""

    def objects(table: naming.Objects, name: str) -> str:
        return "; ".join(", ".join(kinds) + f" `{pattern.format(name)}`" for pattern, kinds in table)

    def distributions(table: Mapping[str, tuple[str, ...]]) -> str:
        return ", ".join(
            f"`{d}`" + ("" if packages == (d.replace("-", "_"),) else f" ({_codes(packages)})")
            for d, packages in table.items()
        )

    kubernetes = [n for n in naming.RESERVED_NAMESPACES if n == "default"]
    return {
        "service": objects(naming.SERVICE_OBJECTS, "S"),
        "infrastructure": objects(naming.INFRASTRUCTURE_OBJECTS, "C"),
        "external": objects(naming.EXTERNAL_OBJECTS, "E"),
        "edge": naming.edge_rule("T", "P"),
        "url": naming.url_variable("s"),
        "page": naming.service_page("S"),
        "fixed": naming.FIXED_OBJECTS,
        "pages": naming.FIXED_PAGES,
        "kubernetes_namespaces": _codes([f"{naming.RESERVED_NAMESPACE_PREFIX}*", *kubernetes]),
        "other_namespaces": _codes(n for n in naming.RESERVED_NAMESPACES if n not in kubernetes),
        "own": distributions(naming.OWN),
        "runtime": distributions(naming.RUNTIME_DISTRIBUTIONS),
        "template_modules": _codes(naming.SERVICE_TEMPLATE_MODULES),
        "other_stdlib": _codes(sorted(naming.OTHER_PYTHONS_STDLIB)),
        "max_text": f"{MAX_TEXT:,}",
        "max_image_prefix": MAX_IMAGE_PREFIX,
    }


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
