"""CustomResourceDefinitions for the custom kinds the overlays hold, made from our own CRD schemas.

A cluster without the mesh or the Prometheus Operator does not serve their kinds, and the
overlays cannot be applied there. The schemas under generator/render/crd-schemas/ (the projects' own,
made strict) are turned back into the structural OpenAPI schemas a CRD carries, one
``apiextensions.k8s.io/v1`` CRD per kind, under ``generated/k8s/crds``. They serve only the
version the overlays use and run no controller: right for a test cluster (`nexus deploy
--install-crds`), never a replacement for the mesh's or the operator's own install, whose CRDs
serve more versions (``install`` refuses to overwrite a CRD that Nexus did not make).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml

from ..yamlread import split, top_scalars
from .context import GENERATED_HEADER

FOLDER = "k8s/crds"
# The projects' CRD schemas, made strict (sources and versions: the README there). The checks
# validate the mesh and monitoring objects against them; here they become CRDs.
SCHEMAS = Path(__file__).resolve().parent / "crd-schemas"
OURS = {"app.kubernetes.io/managed-by": "nexus"}


def schema_path(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / f"{group}_{version}_{kind.lower()}.json"


@functools.cache
def known(api_version: str, kind: str) -> bool:
    """Whether a CRD schema ships for this kind. Asked of every mesh and monitoring document
    (at 10,000 services 20,000 on an edit, a stat each: 0.15 s); the schemas ship with Nexus,
    so the answer holds for the process."""
    return schema_path(api_version, kind).is_file()


def plural(kind: str) -> str:
    """The resource name the projects give these kinds: Sidecar -> sidecars,
    AuthorizationPolicy -> authorizationpolicies."""
    low = kind.lower()
    return low[:-1] + "ies" if low.endswith("y") and low[-2:-1] not in "aeiou" else low + "s"


def structural(node: Any) -> Any:
    """A strict JSON Schema node back to the OpenAPI v3 form of a structural CRD schema.

    The reverse of scripts/crd_schemas.py's ``strict``: a ``[type, "null"]`` pair becomes
    ``nullable``, ``additionalProperties: false`` goes (a structural schema prunes unknown fields
    by itself, and forbids it beside ``properties``), and ``const`` becomes a one-value ``enum``.
    The Prometheus Operator's schemas come from an npm package that spells ``nullable`` as a
    ``oneOf`` with null and ``x-kubernetes-int-or-string`` as an integer-or-string ``anyOf``.
    """
    if isinstance(node, list):
        return [structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    options = node.get("oneOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:  # the npm package's nullable
        return {**structural(next(o for o in options if o != {"type": "null"})), "nullable": True}
    if node.get("anyOf") in ([{"type": "integer"}, {"type": "string"}], [{"type": "string"}, {"type": "integer"}]):
        return {"x-kubernetes-int-or-string": True}  # how the npm package spells IntOrString
    out = {k: structural(v) for k, v in node.items() if k not in ("$schema", "title")}
    kind = out.get("type")
    if isinstance(kind, list) and "null" in kind and len(kind) == 2:
        out["type"] = next(t for t in kind if t != "null")
        out["nullable"] = True
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    if isinstance(out.get("additionalProperties"), dict) and not out.get("properties"):
        out.pop("properties", None)  # a map: properties and additionalProperties exclude each other
    if "const" in out:
        out["enum"] = [out.pop("const")]
    return out


def definition(api_version: str, kind: str) -> dict[str, Any]:
    """One CRD for ``kind`` in ``api_version``, from its schema under generator/render/crd-schemas/."""
    group, _, version = api_version.rpartition("/")
    schema = json.loads(schema_path(api_version, kind).read_text(encoding="utf-8"))
    props = structural(schema.get("properties") or {})
    # the API server owns these three: a CRD may not narrow metadata beyond name
    props.update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
    top = {"type": "object", "properties": props}
    if required := sorted(set(schema.get("required") or []) - {"apiVersion", "kind", "metadata"}):
        top["required"] = required
    name = plural(kind)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{name}.{group}", "labels": dict(OURS)},
        "spec": {
            "group": group,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": name, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": top}}],
        },
    }


def custom_kinds(files: dict[str, str], prefix: str) -> list[tuple[str, str]]:
    """(apiVersion, kind) of every document under ``prefix`` that has a CRD schema of ours. Each
    document is read only as far as its apiVersion and kind, and whole only where that cannot
    say (yamlread.top_scalars): at 10,000 services the monitoring files hold 10,000 ServiceMonitors,
    and reading each whole took 1.5 s of every edit that changes them (a port, a timeout)."""
    kinds = set()
    for path in sorted(p for p in files if p.startswith(prefix) and p.endswith(".yaml")):
        for text in split(files[path]):
            head = top_scalars(text, _HEAD)
            if len(head) == len(_HEAD):
                kinds.add((head["apiVersion"], head["kind"]))
    return sorted(k for k in kinds if known(*k))  # a lookup of a file per kind, not per document


_HEAD = ("apiVersion", "kind")


def render(kinds: list[tuple[str, str]]) -> dict[str, str]:
    """``k8s/crds``: one file per CRD and a kustomization listing them; nothing when no kind is custom."""
    if not kinds:
        return {}
    head = f"# {GENERATED_HEADER}\n"
    out = {}
    for api_version, kind in kinds:
        crd = definition(api_version, kind)
        note = (
            f"# {kind} for a cluster without its project's own install (no controller runs it): "
            "`nexus deploy --install-crds` applies this folder.\n"
        )
        out[f"{FOLDER}/{crd['metadata']['name']}.yaml"] = head + note + _dump(crd)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(p.removeprefix(FOLDER + "/") for p in out),
    }
    out[f"{FOLDER}/kustomization.yaml"] = head + yaml.safe_dump(kustomization, sort_keys=False)
    return dict(sorted(out.items()))


# libyaml's emitter: the same bytes as PyYAML's own for these definitions (a test compares every
# schema we ship), at a tenth of the cost, paid on every run
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(data: dict[str, Any], dumper: Any = None) -> str:
    return yaml.dump(data, Dumper=dumper or _DUMPER, sort_keys=True, width=1000)
