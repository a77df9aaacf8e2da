"""Strict validation of manifests against the official Kubernetes schemas, made cheap.

The schemas are kubernetes-validate's own files (the ``-strict`` variants: unknown fields fail).
Its ``validate()`` re-reads the 1.3 MB definitions file and builds a new jsonschema validator for
every document (seconds for the shipped catalog). Here validators are built once per kind with
jsonschema-rs (the same Draft 2020-12; python-jsonschema took about 2.5 ms per manifest, most of
a cold generate, jsonschema-rs about 15 µs) and reused, and a document whose exact text already
passed is skipped:
``SchemaValidator.seen`` holds those hashes, and ``load``/``save`` keep them between runs in the
user's cache folder, a set per output folder (never in a checkout, where a planted hash would
skip a check), so an unchanged run does not even import the validator.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import re
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import usercache

K8S_VERSION = "1.32"  # the minor of the machine's kubectl; also the namespace's PSS version
# The oldest Kubernetes the manifests run on, decided by the API versions they use:
# autoscaling/v2 (HorizontalPodAutoscaler) is served from 1.23; policy/v1 from 1.21.
OLDEST_K8S_VERSION = "1.23"


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


def held(files: Mapping[str, str], path: str, digests: Mapping[str, str] | None) -> str:
    """What the file at ``path`` holds, for a key: its SHA-256 from ``digests`` (digest.of_files
    hashed every rendered file already: at 10,000 services hashing the texts again was half a
    second of an edit), else its text."""
    return f"sha256:{digests[path]}" if digests is not None and path in digests else files[path]


class SchemaValidator:
    """Validators compiled once per kind; ``seen`` holds the hashes of documents that passed."""

    def __init__(self, version: str = K8S_VERSION) -> None:
        self.version = version
        self.seen: set[str] = set()
        self.used: set[str] = set()  # hashes this run looked up or added: what a full cache keeps
        # a pass that stands for another, used whenever it is (``passed``): the Kubernetes checks'
        # whole run, which skips their pass across files; that one is needed again as soon as a
        # file changes, and a run that skipped it had dropped it past the cache's limit
        self.implied: dict[str, str] = {}
        # new schemas (another version, another kubernetes-validate) or new code: another cache
        self.schemas = f"{version}-{_package_version()}"  # which schema files: the cuts' cache folder too
        self.salt = f"{self.schemas}:".encode() + hashlib.blake2b(Path(__file__).read_bytes()).digest()
        self._validators: dict[tuple[str, str], Any] = {}
        self._definitions: dict[str, Any] | None = None  # the whole document, read when a cut is made

    def key(self, text: str) -> str:
        return hashlib.blake2b(self.salt + text.encode(), digest_size=16).hexdigest()

    def passed(self, key: str | None) -> bool:
        """Whether ``key`` passed before (``seen``); one that did is used by this run, and so kept
        by its ``save`` past ``CACHE_LIMIT`` (at 10,000 services, always): a pass found and not
        counted was dropped, and the next run did its check again (the mesh's, the monitoring's
        and the Kubernetes checks' across files: 0.4 s of the first edit after a cold run)."""
        if key is None or key not in self.seen:
            return False
        self.used.add(key)
        implied = self.implied.get(key)
        if implied is not None:
            self.used.add(implied)
        return True

    def keep(self, *keys: str, implying: str | None = None) -> None:
        """``keys`` passed: kept in ``seen``, and used by this run (``passed``); each implying
        another pass, when said, which their next use keeps too."""
        self.seen.update(keys)
        self.used.update(keys)
        if implying is not None:
            self.implied.update(dict.fromkeys(keys, implying))

    def run_key(
        self, parts: Iterable[str], files: Mapping[str, str], paths: Iterable[str], digests: Mapping[str, str] | None
    ) -> str:
        """The key of a whole check's run: its own ``parts`` (a name, its code, the catalog) and
        each of ``paths`` with what it holds (``held``)."""
        return self.key("\0".join([*parts, *(f"{p}\0{held(files, p, digests)}" for p in paths)]))

    def errors(self, text: str, doc: dict[str, Any], limit: int = 5) -> list[str]:
        """Why ``doc`` (parsed from ``text``) breaks its schema, as 'path: message' lines; [] if it passes."""
        key = self.key(text)
        self.used.add(key)
        if key in self.seen:
            return []
        found = self.problems(doc, limit)
        if not found:
            self.seen.add(key)
        return found

    def problems(self, doc: dict[str, Any], limit: int = 5) -> list[str]:
        """Why ``doc`` breaks its schema, checked now (no ``seen`` lookup); [] if it passes."""
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return ["apiVersion and kind must both be set"]
        validator = self._validator(api_version, kind)
        if validator is None:
            return [f"no Kubernetes {self.version} schema for {api_version} {kind}"]
        try:
            found = [
                f"{'.'.join(map(str, e.instance_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)
            ]
        except ValueError as exc:  # a value JSON has no form for (a number as a key, a YAML date)
            return [f"(top): not JSON, as the API server reads a manifest: {exc}"]
        return sorted(found)[:limit]

    def _validator(self, api_version: str, kind: str) -> Any:
        """The validator for this kind, built on first use (the import deferred to here) from
        the kind's bundle (``_bundle``): its schema and the shared definitions it refers to."""
        if (api_version, kind) not in self._validators:
            import jsonschema_rs

            found = self._bundle(schema_file(api_version, kind))
            validator = None
            if found is not None:
                schema, definitions = found
                registry = jsonschema_rs.Registry([(definitions["$id"], definitions)])
                validator = jsonschema_rs.Draft202012Validator(schema, registry=registry)
            self._validators[(api_version, kind)] = validator
        return self._validators[(api_version, kind)]

    @cached_property
    def _cuts(self) -> Path | None:
        return usercache.folder("k8s-schemas", self.schemas)

    def _bundle(self, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The schema file ``name`` and the definitions document cut to what it reaches (None:
        no such schema). Each kind's schema refers by ``$ref`` into one 1 MB document of 638
        definitions, parsed and registered in 12 ms; a Deployment reaches 114 of them, a Service
        15. The cut is kept in the user's cache folder by the schemas' version: an edit that
        validates a few manifests builds their validators from a few kB."""
        folder = self._cuts
        kept = usercache.read(folder / name) if folder is not None else None
        if kept is not None:
            with contextlib.suppress(ValueError):
                schema, definitions = json.loads(kept)
                return schema, definitions
        path = schema_dir(self.version) / name
        if not path.is_file():
            return None
        schema = json.loads(path.read_bytes())
        if self._definitions is None:
            self._definitions = json.loads((path.parent / "_definitions.json").read_bytes())
        definitions = _cut(self._definitions, schema)
        if folder is not None:
            usercache.write(folder / name, json.dumps([schema, definitions]).encode())
        return schema, definitions

    def load(self, kept: usercache.Shards[str, str]) -> None:
        """Add the passes ``kept`` holds (usercache.Shards: each pass by its key, with the pass
        it implies or ""); a missing, torn or altered shard holds none."""
        for key, implied in kept.load().items():
            self.seen.add(key)
            if implied:
                self.implied[key] = implied

    def save(self, kept: usercache.Shards[str, str]) -> None:
        """Keep the passes for the next run; past ``CACHE_LIMIT`` only this run's, so that
        passes of old schemas, old code and old versions of the files do not pile up for ever.
        ``kept`` is one output folder's (``Shards.space``): with one set for all, a run of
        another project's catalog past the limit dropped this one's passes, and the next edit
        here checked everything again (at 10,000 services 1.6 s more)."""
        passes = self.seen if len(self.seen) <= CACHE_LIMIT else self.used & self.seen
        implied = self.implied
        kept.save({key: implied[key] if implied.get(key) in passes else "" for key in passes})


CACHE_LIMIT = 50_000  # passes of one output folder (about 2 MB): the shipped catalog's manifests are about 300


def _cut(definitions: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``definitions`` (a document of ``$defs``) with only the definitions ``schema`` reaches
    through ``$ref``, directly or through other definitions; the whole document when a
    reference has another form than ``<the document>#/$defs/<name>`` (nothing is guessed)."""
    every = definitions.get("$defs", {})
    wanted: set[str] = set()
    todo: list[Any] = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                _, sep, name = ref.partition("#/$defs/")
                if not sep or name not in every or "/" in name:
                    return definitions
                if name not in wanted:
                    wanted.add(name)
                    todo.append(every[name])
            todo.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            todo.extend(node)
    return {**definitions, "$defs": {name: every[name] for name in sorted(wanted)}}


def _package_version() -> str:
    # new schema files in a new kubernetes-validate invalidate the cache
    try:
        return importlib.metadata.version("kubernetes-validate")
    except importlib.metadata.PackageNotFoundError:
        return "?"


DEFAULT = SchemaValidator()
