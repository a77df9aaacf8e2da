"""Rendered YAML read back as documents, for the checks that compare output with the catalog."""

from __future__ import annotations

import hashlib
import marshal
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import usercache
from ..catalog.load import FAST_LOADER

_SEPARATOR = re.compile(r"^---[ \t]*$", re.M)


@dataclass
class Doc:
    path: str
    text: str  # the document's own YAML text: the schema cache's key
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.data.get("kind"))

    @property
    def name(self) -> str:
        return str((self.data.get("metadata") or {}).get("name"))


def split(text: str) -> list[str]:
    """A rendered file's documents' texts (templates never put '---' in a value)."""
    return _SEPARATOR.split(text)


def documents(path: str, text: str) -> Iterator[Doc]:
    """The documents of one file, each with its own text."""
    for chunk in split(text):
        data = load_yaml(chunk)
        if isinstance(data, dict):
            yield Doc(path, chunk, data)


def load_yaml(text: str) -> Any:
    return PARSED(text)


class Memo:
    """A pure function of a text, its results kept by the text's hash. Building Python objects
    from YAML is most of what the checks cost, and an edit changes few documents: between runs
    the results are kept in the user's cache folder. Entries are kept marshalled (every read
    gets its own copy, so no check can change another's data) in marshal's format, which runs
    no code when read."""

    def __init__(self, function: Callable[[str], Any], salt: bytes = b"") -> None:
        self.function = function
        self.salt = salt  # what else shapes the results (the function's code), in every key
        self.entries: dict[bytes, bytes] = {}
        self.used: set[bytes] = set()
        self.added = False

    def key(self, text: str) -> bytes:
        return hashlib.blake2b(self.salt + text.encode("utf-8"), digest_size=16).digest()

    def __call__(self, text: str) -> Any:
        key = self.key(text)
        self.used.add(key)
        kept = self.entries.get(key)
        if kept is not None:
            return marshal.loads(kept)
        data = self.function(text)
        if len(self.entries) > 2 * ENTRY_LIMIT:  # a long-lived process (a test session) reads many catalogs
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
        try:
            self.entries[key] = marshal.dumps(data)
            self.added = True
        except ValueError:  # a type marshal does not know (a YAML timestamp): computed again next time
            pass
        return data

    def load(self, path: Path) -> None:
        """Add the entries kept in ``path`` (missing, altered or unreadable: none)."""
        payload = usercache.read(path)
        if payload is None:
            return
        try:
            found = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            return
        if isinstance(found, dict):
            self.entries.update((k, v) for k, v in found.items() if isinstance(k, bytes) and isinstance(v, bytes))

    def save(self, path: Path) -> None:
        """Keep the documents for the next run: all of them (a run that skips a whole area still
        needs that area's documents after the next edit), or past ``ENTRY_LIMIT`` only the ones
        this run read, so that old documents do not pile up for ever."""
        if self.added or len(self.entries) > ENTRY_LIMIT:
            kept = (
                self.entries
                if len(self.entries) <= ENTRY_LIMIT
                else {k: v for k, v in self.entries.items() if k in self.used}
            )
            usercache.write(path, marshal.dumps(kept))


def prefetch(texts: Iterable[str]) -> None:
    """Read into PARSED, on every core, the documents it does not hold yet, when they are many:
    PyYAML builds the objects in Python, and a cold run at 5,000 services spent 40 s of one
    core on it. Each worker returns its documents marshalled, keyed as PARSED keys them, so
    the result is the same whatever the order they finish in; a document that does not parse
    is left out (the check reading it reports the error)."""
    misses = sorted({key: text for text in texts if (key := PARSED.key(text)) not in PARSED.entries}.items())
    workers = min(os.cpu_count() or 1, 8)
    if len(misses) < PARALLEL_FROM or workers < 2:
        return
    chunks = [[text for _, text in misses[i::workers]] for i in range(workers)]
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for found in pool.map(_read_all, chunks):
            PARSED.entries.update(found)
            PARSED.added = PARSED.added or bool(found)


def _read_all(texts: list[str]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for text in texts:
        try:
            out[PARSED.key(text)] = marshal.dumps(yaml.load(text, Loader=FAST_LOADER))
        except (yaml.YAMLError, ValueError):  # an error, or a type marshal does not know: read in the run
            continue
    return out


PARALLEL_FROM = 3_000  # documents: below this, starting the workers costs more than it saves
ENTRY_LIMIT = 250_000  # documents: 10,000 services render about 110,000
# one per process: the cache file's name carries what shapes the data (PyYAML and its loader)
PARSED = Memo(lambda text: yaml.load(text, Loader=FAST_LOADER))
CACHE_NAME = f"yaml-{yaml.__version__}-{FAST_LOADER.__name__}"


def get(data: Any, *keys: str | int) -> Any:
    """data[k1][k2]..., or None where the path does not exist (manifests are read, not trusted)."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data
