"""The user's cache folder: what Nexus keeps between runs, never inside a checkout.

A checkout is shared through pull requests, so nothing in it may steer what Nexus runs or
skips: a compiled template or a list of "already validated" hashes planted there would be
trusted by every machine that runs `nexus generate`. Caches therefore live in the user's own
cache folder ($XDG_CACHE_HOME/nexus, else ~/.cache/nexus; platformdirs picks the place on
other systems), which only the user can write:

- the folder is created owner-only (0700) and used only while it stays so (owned by this user,
  no group or other access); otherwise every run goes without a cache, slower but correct;
- every entry is written whole (a temporary file renamed over it, 0600) and carries the
  SHA-256 of its payload, checked on every read, so a torn or corrupted entry is a miss.

Deleting the folder is always safe: the next run rebuilds what it needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

_MAGIC = b"nexus-cache-1 "


def root() -> Path:
    """Where the cache would be (whether or not it exists or is usable)."""
    import platformdirs  # a few ms; only runs that use a cache pay for it

    return Path(platformdirs.user_cache_dir("nexus", appauthor=False))


def folder(*parts: str) -> Path | None:
    """The cache folder ``root()/parts...``, created owner-only; None when it cannot be used
    (not creatable, or not private to this user: then nothing is read from it or written)."""
    base = root()
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(base):
            return None
        path = base
        for part in parts:
            path = path / part
            path.mkdir(mode=0o700, exist_ok=True)
            if not _private(path):
                return None
    except OSError:
        return None
    return path


def _private(path: Path) -> bool:
    info = os.lstat(path)  # a symlink is not trusted: it could point anywhere
    getuid = getattr(os, "getuid", None)
    owned = getuid is None or info.st_uid == getuid()
    return stat.S_ISDIR(info.st_mode) and owned and not info.st_mode & 0o077


def read(path: Path) -> bytes | None:
    """The payload stored at ``path``; None when missing, unreadable, torn or altered."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head, sep, payload = data.partition(b"\n")
    if not sep or head != _MAGIC + hashlib.sha256(payload).hexdigest().encode():
        return None
    return payload


def write(path: Path, payload: bytes) -> None:
    """Store ``payload`` at ``path`` whole, or not at all: a cache that cannot be written is
    only a slower next run, never an error."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
