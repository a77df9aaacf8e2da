"""Validators built once per kind agree with validators built the way kubernetes-validate builds
them, on every rendered manifest and on hundreds of broken variants; the hash cache skips and
persists."""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import CATALOG
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from tools import paths_into

from nexus import usercache
from nexus.catalog import load_catalog
from nexus.checks import k8s as k8s_checks
from nexus.checks.documents import documents
from nexus.checks.kubernetes_schema import (
    K8S_VERSION,
    OLDEST_K8S_VERSION,
    SchemaValidator,
    schema_dir,
    schema_file,
)
from nexus.render import k8s as render_k8s
from nexus.render.context import RenderContext


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    loaded = load_catalog(CATALOG)
    files = render_k8s.render(RenderContext(loaded.catalog, loaded.plan))
    return [
        d.data
        for p, t in files.items()
        if p.startswith("k8s/base/")
        for d in documents(p, t)
        if d.kind != "Kustomization"
    ]


@pytest.fixture(scope="module")
def reference() -> Any:
    """jsonschema validators built the way kubernetes_validate.validate() builds them."""
    folder = schema_dir(K8S_VERSION)
    registry = Resource.from_contents(json.loads((folder / "_definitions.json").read_text())) @ Registry()
    cache: dict[tuple[str, str], jsonschema.Draft202012Validator] = {}

    def valid(doc: dict[str, Any]) -> bool:
        key = (doc["apiVersion"], doc["kind"])
        if key not in cache:
            schema = json.loads((folder / schema_file(*key)).read_text())
            cache[key] = jsonschema.Draft202012Validator(schema, registry=Resource.from_contents(schema) @ registry)
        return cache[key].is_valid(doc)

    return valid


def _mutations(doc: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """Broken (and some harmless) variants: keys dropped or added, values retyped or reworded."""
    out = []
    paths = [p for p in paths_into(doc) if p not in {("apiVersion",), ("kind",)}]  # those pick the schema
    for path in rng.sample(paths, k=min(12, len(paths))):
        for change in ("drop", "add", "retype", "reword"):
            copied = copy.deepcopy(doc)
            target = copied
            for part in path[:-1]:
                target = target[part]
            last = path[-1]
            if change == "drop" and isinstance(target, dict):
                del target[last]
            elif change == "add" and isinstance(target[last], dict):
                target[last]["notAField"] = "x"
            elif change == "reword" and isinstance(target[last], str):
                target[last] = "NotAnEnumValue"  # breaks enum fields (Service type, seccomp type...), nothing else
            elif change == "retype":
                old = target[last]
                target[last] = {str: 7, int: "7", bool: "true", list: {"a": 1}, dict: ["a"], float: "1.5"}.get(
                    type(old)
                )
            else:
                continue
            out.append(copied)
    return out


def test_reused_validators_agree_with_fresh_ones(docs: list[dict[str, Any]], reference: Any) -> None:
    validator = SchemaValidator()
    rng = random.Random(1)
    cases = [d for doc in docs[:: max(1, len(docs) // 40)] for d in [doc, *_mutations(doc, rng)]]
    assert len(cases) > 500
    verdicts = {True: 0, False: 0}
    for i, case in enumerate(cases):
        expected = reference(case)
        errors = validator.errors(f"case-{i}", case)
        assert (not errors) == expected, (case, errors)
        verdicts[expected] += 1
    assert min(verdicts.values()) > 100  # both verdicts well represented


def test_a_kinds_cut_of_the_definitions_says_what_the_whole_document_says(docs: list[dict[str, Any]]) -> None:
    """Each kind's validator is built from its schema and only the definitions it reaches, cut
    once and kept in the user's cache folder: the same messages as with the whole 1 MB document,
    for the rendered manifests and their broken variants, whether the cut is made now, read back
    from the cache, or made again because the kept one was torn."""
    import jsonschema_rs

    folder = schema_dir(K8S_VERSION)
    whole = json.loads((folder / "_definitions.json").read_text())
    registry = jsonschema_rs.Registry([(whole["$id"], whole)])
    built: dict[str, Any] = {}

    def whole_says(doc: dict[str, Any]) -> list[str]:
        name = schema_file(doc["apiVersion"], doc["kind"])
        if name not in built:
            built[name] = jsonschema_rs.Draft202012Validator(json.loads((folder / name).read_text()), registry=registry)
        found = [f"{'.'.join(map(str, e.instance_path)) or '(top)'}: {e.message}" for e in built[name].iter_errors(doc)]
        return sorted(found)[:5]

    rng = random.Random(2)
    cases = [d for doc in docs[:: max(1, len(docs) // 30)] for d in [doc, *_mutations(doc, rng)]]
    expected = [whole_says(case) for case in cases]
    assert sum(1 for e in expected if e) > 100 and sum(1 for e in expected if not e) > 30
    cut = SchemaValidator()
    assert [cut.problems(case) for case in cases] == expected
    kept = usercache.folder("k8s-schemas")
    assert kept is not None
    bundles = sorted(kept.glob("*/*.json"))
    assert {b.name for b in bundles} >= {"deployment-apps-v1.json", "service-v1.json"}
    read_back = SchemaValidator()
    assert [read_back.problems(case) for case in cases] == expected
    assert read_back._definitions is None  # every kind's cut came from the cache, not the 1 MB document
    for bundle in bundles:
        bundle.write_bytes(bundle.read_bytes()[:-10])  # torn
    again = SchemaValidator()
    assert [again.problems(case) for case in cases] == expected
    assert again._definitions is not None


def test_every_rendered_manifest_passes(docs: list[dict[str, Any]]) -> None:
    validator = SchemaValidator()
    assert [e for d in docs for e in validator.errors(json.dumps(d), d)] == []
    assert len(validator.seen) == len(docs)


def test_a_validated_text_is_skipped_and_the_cache_persists(tmp_path: Path) -> None:
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"A": "1"}}
    first = SchemaValidator()
    assert first.errors("text-1", doc) == []
    broken = {**doc, "data": {"A": 1}}
    assert first.errors("text-1", broken) == []  # same text: not validated again
    assert first.errors("text-2", broken) == ['data.A: 1 is not of types "null", "string"']
    first.save(usercache.Shards(tmp_path, str, str))
    second = SchemaValidator()
    second.load(usercache.Shards(tmp_path, str, str))
    assert second.seen == first.seen and second._validators == {}  # nothing compiled for a known text
    assert second.errors("text-1", doc) == [] and second._validators == {}
    other = SchemaValidator("1.31")
    assert other.key("text-1") not in first.seen  # another Kubernetes version is another cache
    missing = SchemaValidator()
    missing.load(usercache.Shards(tmp_path / "missing", str, str))  # a missing cache is an empty one
    assert missing.seen == set()


def test_unknown_kinds(tmp_path: Path) -> None:
    assert SchemaValidator().errors("t", {"apiVersion": "example.com/v1", "kind": "Widget"}) == [
        "no Kubernetes 1.32 schema for example.com/v1 Widget"
    ]
    assert SchemaValidator().errors("t", {"kind": "Widget"}) == ["apiVersion and kind must both be set"]


OLDEST_SCHEMAS = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "nexus-tools"
    / f"kubernetes-validate-{OLDEST_K8S_VERSION}"
)


def test_every_rendered_manifest_is_valid_on_the_oldest_supported_kubernetes(docs: list[dict[str, Any]]) -> None:
    """The same manifests against Kubernetes 1.23's official schemas (strict), from kubernetes-validate's
    1.23 release that scripts/install-tools.sh unpacks: every kind and API version exists there."""
    folder = OLDEST_SCHEMAS / "kubernetes_validate" / "kubernetes-json-schema" / f"v{OLDEST_K8S_VERSION}.0-local-strict"
    if not folder.is_dir():
        message = f"no Kubernetes {OLDEST_K8S_VERSION} schemas at {folder}: run `bash scripts/install-tools.sh`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    # that release's files point at "_definitions.json#/definitions/...": register it under that name
    definitions = Resource.from_contents(
        json.loads((folder / "_definitions.json").read_bytes()), default_specification=DRAFT7
    )
    registry = Registry().with_resource("_definitions.json", definitions)

    def errors(doc: dict[str, Any]) -> list[str]:
        path = folder / schema_file(doc["apiVersion"], doc["kind"])
        assert path.is_file(), f"Kubernetes {OLDEST_K8S_VERSION} has no {doc['apiVersion']} {doc['kind']}"
        validator = jsonschema.Draft7Validator(json.loads(path.read_bytes()), registry=registry)
        return [f"{doc['kind']}/{doc['metadata']['name']}: {e.message}" for e in validator.iter_errors(doc)]

    assert [e for doc in docs for e in errors(doc)] == []
    hpa = copy.deepcopy(next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler"))
    hpa["spec"]["minReplica"] = 1  # strict: a misspelled field fails
    assert errors(hpa) and "minReplica" in errors(hpa)[0]
    assert {d["apiVersion"] for d in docs} >= {"autoscaling/v2", "policy/v1"}


def test_a_manifest_json_cannot_hold_fails_its_check_instead_of_stopping_it() -> None:
    """A number as a key or a YAML date (nothing JSON has, and the API server reads JSON) is a
    failure named for its object, not an exception out of the checks."""
    for value in ("{1: 2}", "{day: 2001-01-01}"):
        read = k8s_checks.read_base(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\ndata: {value}\n")
        assert [kind for kind, _, _ in read["schema"]] == ["ConfigMap"]
        assert "not JSON, as the API server reads a manifest" in read["schema"][0][2]
