"""Strict validation of manifests against the official Kubernetes schemas, made cheap.

The schemas are kubernetes-validate's own files (the ``-strict`` variants: unknown fields fail).
Its ``validate()`` re-reads the 1.3 MB definitions file and builds a new jsonschema validator for
every document, and even a reused jsonschema validator costs ~0.35 ms a document (~0.1 s for the
shipped catalog's 306). So:

- each kind's schema is compiled once, on first use, into nested closures (``_compile``). The
  Kubernetes schemas use only type, properties, additionalProperties, required, items, enum,
  oneOf and $ref (format is an annotation, as in jsonschema by default); a schema using anything
  else falls back to jsonschema for that kind, and a test holds the two to the same verdicts;
- a document whose text was already validated is skipped: ``SchemaValidator.seen`` holds those
  hashes, and ``load``/``save`` keep them in a file between runs, so an unchanged re-run reads
  no schema at all. (k8s_checks keeps the key of a whole passing run in the same set.)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

K8S_VERSION = "1.32"  # the minor of the machine's kubectl; also the namespace's PSS version


def schema_dir(version: str = K8S_VERSION) -> Path:
    """kubernetes-validate's strict schemas for ``version``, found without importing it."""
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubernetes-validate is not installed (pip install kubernetes-validate)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    if not folder.is_dir():
        raise RuntimeError(f"kubernetes-validate has no schemas for Kubernetes {version} ({folder})")
    return folder


def schema_file(api_version: str, kind: str) -> str:
    """kubernetes-validate's naming: networking.k8s.io/v1 NetworkPolicy -> networkpolicy-networking-v1.json."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


class SchemaValidator:
    """Validators compiled once per kind; ``seen`` holds the hashes of documents that passed."""

    def __init__(self, version: str = K8S_VERSION) -> None:
        self.version = version
        self.seen: set[str] = set()
        # new schemas (another version, another kubernetes-validate) or new code: another cache
        self._salt = f"{version}:{_package_version()}:".encode() + hashlib.blake2b(Path(__file__).read_bytes()).digest()
        self._validators: dict[tuple[str, str], Check | None] = {}
        self._defs: dict[str, Any] | None = None

    def key(self, text: str) -> str:
        return hashlib.blake2b(self._salt + text.encode(), digest_size=16).hexdigest()

    def errors(self, text: str, doc: dict[str, Any], limit: int = 5) -> list[str]:
        """Why ``doc`` (parsed from ``text``) breaks its schema, as 'path: message' lines; [] if it passes."""
        key = self.key(text)
        if key in self.seen:
            return []
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return ["apiVersion and kind must both be set"]
        check = self._validator(api_version, kind)
        if check is None:
            return [f"no Kubernetes {self.version} schema for {api_version} {kind}"]
        found: list[str] = []
        check(doc, "", found)
        if not found:
            self.seen.add(key)
        return sorted(found)[:limit]

    def _validator(self, api_version: str, kind: str) -> Check | None:
        if (api_version, kind) not in self._validators:
            folder = schema_dir(self.version)
            path = folder / schema_file(api_version, kind)
            check = None
            if path.is_file():
                if self._defs is None:
                    self._defs = json.loads((folder / "_definitions.json").read_bytes())["$defs"]
                schema = json.loads(path.read_bytes())
                try:
                    check = _Compiler(self._defs).compile(schema)
                except _Unsupported:
                    check = _jsonschema_check(schema, folder)
            self._validators[(api_version, kind)] = check
        return self._validators[(api_version, kind)]

    def load(self, path: Path) -> None:
        """Add the hashes kept in ``path`` (a missing or unreadable file is an empty cache)."""
        try:
            self.seen.update(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            pass

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.seen)))
        tmp.replace(path)


Check = Callable[[Any, str, list[str]], None]  # (value, its dotted path, errors to append to)

# JSON Schema types as Python types; bool is its own type, so True is never an integer
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}
_ANNOTATIONS = {"description", "format", "$schema", "$id", "default"}  # no effect on the verdict


class _Unsupported(Exception):
    """A keyword the compiler does not implement: use jsonschema for this kind."""


class _Compiler:
    """Schema -> nested closures that append 'path: message' for every violation found."""

    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        self.refs: dict[str, Check] = {}

    def compile(self, schema: dict[str, Any]) -> Check:
        unknown = {k for k in schema if not k.startswith("x-kubernetes-")} - _ANNOTATIONS - {
            "type", "properties", "additionalProperties", "required", "items", "enum", "oneOf", "$ref"
        }
        if unknown:
            raise _Unsupported(sorted(unknown))
        steps: list[Check] = []
        if "$ref" in schema:
            steps.append(self._ref(schema["$ref"]))
        if "type" in schema:
            steps.append(_type_check(schema["type"]))
        if "enum" in schema:
            steps.append(_enum_check(schema["enum"]))
        if "oneOf" in schema:
            steps.append(self._one_of([self.compile(s) for s in schema["oneOf"]]))
        if any(k in schema for k in ("properties", "additionalProperties", "required")):
            steps.append(self._object(schema))
        if "items" in schema:
            steps.append(_items_check(self._sub(schema["items"])))
        if len(steps) == 1:
            return steps[0]

        def check(value: Any, path: str, errors: list[str]) -> None:
            for step in steps:
                step(value, path, errors)

        return check

    def _sub(self, schema: Any) -> Check:
        if schema is True or schema == {}:
            return _accept
        if schema is False:
            return lambda value, path, errors: errors.append(f"{path or '(top)'}: not allowed")
        return self.compile(schema)

    def _ref(self, ref: str) -> Check:
        match = re.fullmatch(r"(?:[^#]*/_definitions\.json)?#/\$defs/([^/]+)", ref)
        if not match or match.group(1) not in self.defs:
            raise _Unsupported(ref)
        name = match.group(1)
        if name not in self.refs:
            compiled: list[Check] = []
            self.refs[name] = lambda value, path, errors: compiled[0](value, path, errors)  # recursion
            compiled.append(self.compile(self.defs[name]))
            self.refs[name] = compiled[0]
        return self.refs[name]

    def _one_of(self, options: list[Check]) -> Check:
        def check(value: Any, path: str, errors: list[str]) -> None:
            passing = 0
            for option in options:
                scratch: list[str] = []
                option(value, path, scratch)
                passing += not scratch
            if passing != 1:
                errors.append(f"{path or '(top)'}: {value!r} is not valid under exactly one of the given schemas")

        return check

    def _object(self, schema: dict[str, Any]) -> Check:
        props = {k: self._sub(v) for k, v in (schema.get("properties") or {}).items()}
        extra = schema.get("additionalProperties", True)
        other = None if extra is False else self._sub(extra)
        required = list(schema.get("required") or [])

        def check(value: Any, path: str, errors: list[str]) -> None:
            if type(value) is not dict:
                return
            prefix = f"{path}." if path else ""
            for key in required:
                if key not in value:
                    errors.append(f"{path or '(top)'}: {key!r} is a required property")
            for key, item in value.items():
                sub = props.get(key, other)
                if sub is None:
                    errors.append(f"{path or '(top)'}: Additional properties are not allowed ({key!r} was unexpected)")
                elif sub is not _accept:
                    sub(item, f"{prefix}{key}", errors)

        return check


def _accept(value: Any, path: str, errors: list[str]) -> None:
    return None


def _type_check(names: str | list[str]) -> Check:
    names = [names] if isinstance(names, str) else list(names)
    if any(n not in _PY_TYPES for n in names):
        raise _Unsupported(names)
    allowed = tuple(t for n in names for t in _PY_TYPES[n])
    integral = "integer" in names and "number" not in names  # 2.0 is an integer in JSON Schema

    def check(value: Any, path: str, errors: list[str]) -> None:
        kind = type(value)
        if kind not in allowed and not (integral and kind is float and value.is_integer()):
            errors.append(f"{path or '(top)'}: {value!r} is not of type {', '.join(map(repr, names))}")

    return check


def _enum_check(options: list[Any]) -> Check:
    # JSON equality: True is not 1, so compare type and value
    allowed = {(type(o), o) for o in options if not isinstance(o, (dict, list))}
    if len(allowed) != len(options):
        raise _Unsupported("enum of objects")

    def check(value: Any, path: str, errors: list[str]) -> None:
        if isinstance(value, (dict, list)) or (type(value), value) not in allowed:
            errors.append(f"{path or '(top)'}: {value!r} is not one of {options!r}")

    return check


def _items_check(item: Check) -> Check:
    def check(value: Any, path: str, errors: list[str]) -> None:
        if type(value) is list:
            for i, element in enumerate(value):
                item(element, f"{path}.{i}", errors)

    return check


def _jsonschema_check(schema: dict[str, Any], folder: Path) -> Check:
    import jsonschema
    from referencing import Registry, Resource

    defs = json.loads((folder / "_definitions.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema, registry=Resource.from_contents(schema) @ (Resource.from_contents(defs) @ Registry()))

    def check(value: Any, path: str, errors: list[str]) -> None:
        errors.extend(f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(value))

    return check


def _package_version() -> str:
    # new schema files in a new kubernetes-validate invalidate the cache
    try:
        return importlib.metadata.version("kubernetes-validate")
    except importlib.metadata.PackageNotFoundError:
        return "?"


DEFAULT = SchemaValidator()
