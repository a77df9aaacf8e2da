"""How Nexus names the bytes of a file: their SHA-256, in hex. One rule for the render caches,
the comparison with the tree on disk, the record of a run and the checks' keys, which hand
these names to each other instead of hashing the same bytes again (``known``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

# id(text) -> (that very text, its name), for the texts a caller said it knows the names of
_KNOWN: dict[int, tuple[str, str]] = {}


def of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def of_text(text: str) -> str:
    """The name of the bytes ``text`` is written as (UTF-8); not hashed again while ``known``
    holds it."""
    found = _KNOWN.get(id(text))
    if found is not None and found[0] is text:
        return found[1]
    return of_bytes(text.encode("utf-8"))


def of_files(files: Mapping[str, str], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each file's name, by path; ``known`` holds those of some already (RenderContext.digests:
    taken from the render caches, hashing 290 MB at 10,000 services was half a second of every
    edit)."""
    known = known or {}
    return {path: known.get(path) or of_text(text) for path, text in files.items()}


@contextmanager
def known(pairs: Iterable[tuple[str, str]]) -> Iterator[None]:
    """While inside, ``of_text`` returns the name given for each of these (text, name) pairs
    without hashing: the very text objects, so a text is known by identity, never by a
    lookup that would hash it. The check stage reads each of 10,000 services' files through
    memos keyed by their names, and digest.of_files named them all already. (Worker processes
    forked inside inherit them.)"""
    new = {id(text): (text, name) for text, name in pairs}
    if _KNOWN:  # nested: the outer one's names stay
        new = {key: pair for key, pair in new.items() if key not in _KNOWN}
    _KNOWN.update(new)
    try:
        yield
    finally:
        for key in new:
            del _KNOWN[key]
