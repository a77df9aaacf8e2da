"""The catalog's JSON Schema, derived from the models so it can never disagree with them."""

from __future__ import annotations

import json
from typing import Any

from .models import Catalog

SCHEMA_ID = "https://nexus.example.com/schemas/catalog.schema.json"


def schema() -> dict[str, Any]:
    out = Catalog.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **out}


def schema_json() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
