"""`nexus schema`: the JSON Schema editors use, generated from the models and committed."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import CATALOG, ROOT, nexus

from nexus.catalog.json_schema import schema_json

COMMITTED = ROOT / "generated" / "catalog.schema.json"


def test_schema_command_prints_the_committed_schema():
    result = nexus("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == schema_json()
    # regenerate with: nexus schema > generated/catalog.schema.json
    assert result.stdout == COMMITTED.read_text(encoding="utf-8")


def test_catalog_points_editors_at_the_schema():
    first = CATALOG.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = first.split("$schema=", 1)[1]
    assert (CATALOG.parent / target).resolve() == COMMITTED.resolve()


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema comes with kubernetes-validate; not installed here"
    )
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)  # the schema is itself valid JSON Schema
    return cls(schema)


def test_schema_accepts_the_shipped_catalog(validator):
    errors = list(validator.iter_errors(yaml.safe_load(CATALOG.read_text(encoding="utf-8"))))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("services", "auth-service", "port"), 80, "minimum"),
        (("services", "auth-service", "port"), "3001", "type"),
        (("services", "auth-service", "prot"), 3001, "additionalProperties"),
        (("services", "auth-service", "depends_on", "user-auth"), "strong", "enum"),
        (
            ("services", "Auth"),
            {"port": 3999, "category": "core", "team": "core-platform", "description": "x"},
            "additionalProperties",
        ),
    ],
    ids=["port-range", "port-type", "unknown-key", "edge-kind", "name"],
)
def test_schema_rejects_what_the_validator_rejects(validator, path, value, expected):
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    errors = list(validator.iter_errors(data))
    assert errors
    # the failing keyword, anywhere in the error tree (unions report through anyOf/oneOf)
    keywords = set()
    stack = errors[:]
    while stack:
        e = stack.pop()
        keywords.add(e.validator)
        stack.extend(e.context or [])
    assert expected in keywords, keywords
