"""Strict validation of the mesh and monitoring resources against their projects' CRD schemas.

The schemas are committed under generator/render/crd-schemas/ (their sources and versions: the README
there), one JSON Schema per kind, strict like the API server with a structural CRD: an unknown
or misspelled field fails. Validators are built once per kind, on first use, with jsonschema-rs
(the same draft as kubernetes_schema; python-jsonschema took 14 s for 10,000 services' mesh objects).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from ..render.crds import SCHEMAS, known, schema_path

__all__ = ["SCHEMAS", "errors", "known", "schema_path"]


@cache
def _validator(api_version: str, kind: str) -> Any:
    path = schema_path(api_version, kind)
    if not path.is_file():
        return None
    import jsonschema_rs  # deferred: only a run that checks mesh resources pays for it

    return jsonschema_rs.Draft202012Validator(json.loads(path.read_bytes()))


def errors(doc: dict[str, Any], limit: int = 5) -> list[str]:
    """Why ``doc`` breaks its kind's schema, as 'path: message' lines; [] when it passes."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["apiVersion and kind must both be set"]
    validator = _validator(api_version, kind)
    if validator is None:
        return [f"no CRD schema for {api_version} {kind} under generator/render/crd-schemas/"]
    found = [f"{'.'.join(map(str, e.instance_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]
    return sorted(found)[:limit]
