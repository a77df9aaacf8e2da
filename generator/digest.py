"""How Nexus names the bytes of a file: their SHA-256, in hex. One rule for the render caches,
the comparison with the tree on disk, the record of a run and the checks' keys, which hand
these names to each other instead of hashing the same bytes again."""

from __future__ import annotations

import hashlib


def of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def of_text(text: str) -> str:
    """The name of the bytes ``text`` is written as (UTF-8)."""
    return of_bytes(text.encode("utf-8"))
