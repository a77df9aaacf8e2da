#!/usr/bin/env python3
"""Convert published CRD schemas into the strict JSON Schemas under generator/render/crd-schemas/.

Run by hand when a mesh version moves (see generator/render/crd-schemas/README.md); the output is
committed, so generating and testing stay offline. Istio's schemas come from the npm package
@kubernetes-models/istio, which carries each CRD's openAPIV3Schema as a JavaScript object
literal (node evaluates it). Usage:

    npm pack @kubernetes-models/istio@2.3.0 && tar xzf kubernetes-models-istio-2.3.0.tgz
    python3 scripts/crd_schemas.py package
    npm pack @kubernetes-models/prometheus-operator@1.6.3 && tar xzf kubernetes-models-prometheus-operator-1.6.3.tgz
    python3 scripts/crd_schemas.py package   # the Prometheus Operator's ServiceMonitor and PrometheusRule

"Strict" is what `kubectl apply` does with a structural CRD: every object that lists its
properties rejects any other key (additionalProperties false), unless the CRD says it keeps
unknown fields. OpenAPI's `nullable` becomes a JSON Schema null type.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "generator" / "render" / "crd-schemas"
ISTIO = {
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1beta1", "PeerAuthentication"),
    ("networking.istio.io/v1beta1", "DestinationRule"),
    ("networking.istio.io/v1beta1", "ServiceEntry"),
    ("networking.istio.io/v1beta1", "Sidecar"),
    ("networking.istio.io/v1beta1", "VirtualService"),
}
MONITORING = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# what the generated objects may carry in metadata (the API server's ObjectMeta, narrowed)
METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            "maxLength": 253,
        },
        "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}

_EXTRACT = """
const t = require("fs").readFileSync(process.argv[1], "utf8");
const a = t.indexOf("const schema = "), b = t.indexOf("\\n};\\n", a);
process.stdout.write(JSON.stringify(eval("(" + t.slice(a + 15, b + 2) + ")")));
"""


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items()}
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


def document(api_version: str, kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD's schema as a whole-object schema: apiVersion and kind fixed, metadata narrowed."""
    props = dict(schema.get("properties") or {})
    props.pop("status", None)  # the controller's, never the generator's
    props.update({"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{api_version} {kind}",
        "type": "object",
        "required": sorted({"apiVersion", "kind", "metadata", *schema.get("required", [])}),
        "properties": strict(props),
        "additionalProperties": False,
    }


def file_name(api_version: str, kind: str) -> str:
    group, version = api_version.split("/")
    return f"{group}_{version}_{kind.lower()}.json"


def convert(package: Path) -> None:
    """Every kind above that this unpacked package carries (Istio's or the Prometheus Operator's)."""
    for api_version, kind in sorted(ISTIO | MONITORING):
        source = package / api_version / f"{kind}.js"
        if not source.is_file():
            continue
        raw = json.loads(
            subprocess.run(["node", "-e", _EXTRACT, str(source)], check=True, capture_output=True, text=True).stdout
        )
        write(api_version, kind, document(api_version, kind, raw))


def write(api_version: str, kind: str, schema: dict[str, Any]) -> None:
    (OUT / file_name(api_version, kind)).write_text(
        json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    convert(Path(sys.argv[1]))
