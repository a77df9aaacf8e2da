"""The user's cache folder: what Nexus keeps between runs, never inside a checkout.

A checkout is shared through pull requests, so nothing in it may steer what Nexus runs or
skips: a compiled template or a list of "already validated" hashes planted there would be
trusted by every machine that runs `nexus generate`. Caches therefore live in the user's own
cache folder ($XDG_CACHE_HOME/nexus, else ~/.cache/nexus; platformdirs picks the place on
other systems), which only the user can write:

- the folder is created owner-only (0700) and used only while it stays so (owned by this user,
  no group or other access); otherwise every run goes without a cache, slower but correct;
- every entry is written whole (a temporary file renamed into its name, 0600; one that a
  killed writer left is removed later), or, where one run at a time writes it (a run's record,
  the shards), over the old file in place (``rewrite``), and carries the
  CRC-32 of its payload, checked on every read, so a torn or corrupted entry is a miss. A
  checksum, not a cryptographic hash: whoever could rewrite an entry could rewrite its hash as
  well (the owner-only folder is what keeps others out), and an edit at 10,000 services reads
  370 MB of entries, which SHA-256 hashed at 1.9 GB/s here and zlib's CRC-32 checks at 6.5.

Deleting the folder is always safe: the next run rebuilds what it needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import shutil
import stat
import tempfile
import time
import zlib
from pathlib import Path
from typing import Generic, TypeVar

K = TypeVar("K", str, bytes)
V = TypeVar("V")

_MAGIC = b"nexus-cache-2 "  # then the payload's CRC-32 (8 hex digits), a newline, the payload


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
    view = _view(path)
    return view.tobytes() if view is not None else None


def _view(path: Path) -> memoryview | None:
    """``read(path)`` as a view of the bytes read, not a copy of them: a shard is read once, by
    marshal (at 10,000 services the render caches' 300 MB were copied again just to drop the head)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    end = data.find(b"\n")
    payload = memoryview(data)[end + 1 :]
    if end < 0 or data[:end] != _head(payload):
        return None
    return payload


def _head(payload: bytes | memoryview) -> bytes:
    return _MAGIC + b"%08x" % zlib.crc32(payload)


def write(path: Path, payload: bytes) -> None:
    """Store ``payload`` at ``path`` whole, or not at all (the old entry perhaps gone then): a
    cache that cannot be written is only a slower next run, never an error."""
    sweep(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMPORARY)  # 0600
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            # two writes, not one of the two joined: a record at 10,000 services is 22 MB, and
            # joining copied it into as much new memory
            f.write(_head(payload) + b"\n")
            f.write(payload)
        # The old entry is removed first, then the new one renamed into the free name: renamed
        # over an existing file, ext4 (auto_da_alloc, its default) writes the new file's blocks
        # out at once, in this process, so that a crash cannot leave it empty. Every entry
        # here is checked when read (``_view``), where one missing or torn is only a miss. (A
        # 22 MB record: 0.01 to 0.35 s renamed over the old one, 0.015 s into a free name;
        # an edit at 10,000 services writes it and a hundred shards.)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def rewrite(path: Path, payload: bytes) -> None:
    """``write``, into the very file at ``path`` where there is one (a regular file, linked once):
    its pages are written over where they are, not a new file's allocated and the old one's
    freed (at 10,000 services the 22 MB record every run writes: 0.02 to 0.2 s as a new file,
    0.01 in place). A reader meanwhile, or this writer killed midway, finds a torn entry, which
    ``read`` refuses by its CRC: a miss, as any of ``write``'s failures is (a run's record, its
    shards: one run at a time writes those of an output folder). Not for entries that several
    processes read while one writes (``write``: a reader of the old one reads it whole)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none yet (or a link): a new file
        write(path, payload)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise OSError(f"{path}: not a file of its own")
            # never truncated to nothing first: ext4 then writes the file out at once on close
            # (auto_da_alloc), as it does for a file renamed over another
            f.write(_head(payload) + b"\n")
            f.write(payload)
            f.truncate()
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # torn, or not ours to write over: the next write starts anew
        write(path, payload)


_TEMPORARY = ".tmp"  # how ``write`` ends the name of the file it writes before renaming it
# A temporary file older than this is a killed writer's: a write takes a second at most, and
# one slower still that loses its file only fails to rename it (``write``: a missing entry;
# `nexus new`: a refusal that changed nothing), never leaves a torn file.
STALE_AFTER = 600.0  # seconds
_SWEPT: set[tuple[Path, str, str]] = set()  # the folders this process has swept, by kind of file


def sweep(folder: Path, prefix: str = ".", suffix: str = _TEMPORARY) -> None:
    """Remove the files of ``folder`` named ``prefix``...``suffix`` older than STALE_AFTER: the
    temporary files of writers killed between writing and renaming them (by default ``write``'s:
    a render cache's shard is up to 4 MB, a record 22 MB, and nothing else ever removes them but
    the pruning of a whole version). Once a process for each folder and kind, before its first
    write there. Any other file is left, whatever its age: a writer's folder may be a user's."""
    kind = (folder, prefix, suffix)
    if kind in _SWEPT:
        return
    _SWEPT.add(kind)
    stale = time.time() - STALE_AFTER
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(info.st_mode) and info.st_mtime < stale:
                        os.unlink(entry.path)


def drop(path: Path) -> None:
    """Remove the entry at ``path`` if it is a file (an entry of an earlier layout, never read
    again); anything else there, or nothing, is left as it is."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.unlink(path)


def name_of(out: Path) -> str:
    """What this cache calls an output folder (its record, its render caches' space): a hash
    of its resolved path, so that each checkout's are its own (as the file system spells it:
    a name that is not UTF-8 is a path like any other)."""
    return hashlib.blake2b(os.fsencode(out.resolve()), digest_size=16).hexdigest()


def keep_latest(folder: Path, keep: int = 3) -> None:
    """Remove the other versions of ``folder`` (its siblings named as it is up to the last '-')
    but the ``keep`` most recently written, and an earlier layout's folder of that very name:
    every upgrade or code edit starts a version, checkouts of other versions side by side keep
    theirs, and the rest are never read again."""
    base = folder.name.rsplit("-", 1)[0]
    with contextlib.suppress(OSError):
        os.utime(folder)  # used now: what a run that changed none of its files still counts on
        _keep_recent(folder, [f for f in folder.parent.iterdir() if f.name.rsplit("-", 1)[0] == base], keep)
        if folder.parent / base != folder:
            _remove(folder.parent / base)


def keep_recent(folder: Path, keep: int) -> None:
    """Remove ``folder``'s sibling folders but the ``keep`` most recently used (``folder``
    counts among them, and is used now), and every sibling file (an earlier layout's)."""
    with contextlib.suppress(OSError):
        os.utime(folder)
        spaces = []
        for sibling in folder.parent.iterdir():
            if sibling.is_dir() and not sibling.is_symlink():
                spaces.append(sibling)
            else:
                _remove(sibling)
        _keep_recent(folder, spaces, keep)


def latest_sibling(folder: Path) -> Path | None:
    """The most recently used of ``folder``'s siblings that this cache may read (private to
    this user); None when there is none."""
    try:
        siblings = [f for f in folder.parent.iterdir() if f != folder and _private(f)]
        return max(siblings, key=lambda f: f.lstat().st_mtime, default=None)
    except OSError:  # one removed meanwhile (another run's keep_recent): none, this time
        return None


def _keep_recent(folder: Path, candidates: list[Path], keep: int) -> None:
    candidates.sort(key=lambda f: f.lstat().st_mtime, reverse=True)
    for stale in candidates[keep:]:
        if stale != folder:
            _remove(stale)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)


class Shards(Generic[K, V]):
    """Entries (a key, text or bytes, to a value of ``value_type``, anything marshal writes)
    kept in one folder of this cache, past ``SHARD_FROM`` entries (or ``SHARD_BYTES``) in shards
    by the key's first byte (its first two hex digits):
    a run that changes a few of 10,000 services' entries writes the few shards they are in,
    not all of them (the rendered files and the checked documents: 300 MB in all, rewritten
    on every edit, were a second and a half of one). Fewer entries share one file.

    The folder is one output folder's space (``space``): with one folder for all, a run of
    another project's catalog dropped this one's entries (the render caches keep only what a
    run used: the shipped catalog's next edit rendered everything again, 0.43 CPU s instead of
    0.23, and a 10,000-service one's took 18 s), or left its own for this one to read (the
    memos keep all below a limit: the shipped catalog's checks read a 10,000-service project's
    90 MB, 0.06 -> 0.3 s)."""

    def __init__(self, folder: Path | None, key_type: type[K], value_type: type[V]) -> None:
        self.folder = folder
        self.key_type: type[K] = key_type
        self.value_type: type[V] = value_type
        self.read: dict[str, dict[K, V]] = {}  # shard file name -> its entries, as loaded
        # load() found none here and read the most recently used space's instead (a new checkout)
        self.seeded = False

    @classmethod
    def space(cls, key_type: type[K], value_type: type[V], name: str, *parts: str) -> Shards[K, V]:
        """The shards of the space ``name`` (an output folder's: ``name_of``) of the cache folder
        ``parts`` (None: no usable cache folder)."""
        return cls(folder(*parts, name), key_type, value_type)

    def load(self) -> dict[K, V]:
        """Every entry of every shard that is intact (see ``read``); {} without a folder. A space
        with none yet starts from the entries of the most recently used one, read only (a second
        checkout of a catalog renders and parses nothing again): ``seeded``."""
        entries = self._load(self.read)
        if not self.read and self.folder is not None and (latest := latest_sibling(self.folder)) is not None:
            entries = Shards(latest, self.key_type, self.value_type)._load({})
            self.seeded = bool(entries)
        return entries

    def _load(self, into: dict[str, dict[K, V]]) -> dict[K, V]:
        entries: dict[K, V] = {}
        try:
            names = sorted(n for n in os.listdir(self.folder) if n in _SHARD_NAMES) if self.folder else []
        except OSError:
            names = []
        for name in names:
            assert self.folder is not None
            payload = _view(self.folder / name)
            try:
                found = marshal.loads(payload) if payload is not None else {}
            except (EOFError, ValueError, TypeError):
                found = {}
            if isinstance(found, dict):
                shard = {
                    k: v for k, v in found.items() if isinstance(k, self.key_type) and isinstance(v, self.value_type)
                }
                into[name] = shard
                entries.update(shard)
        return entries

    def save(self, entries: dict[K, V]) -> None:
        """Make the folder hold ``entries``: write the shards that differ from what was read,
        remove the shards none of them is in."""
        if self.folder is None:
            return
        shards: dict[str, dict[K, V]] = {}
        sharded = len(entries) > SHARD_FROM or _weight(entries) > SHARD_BYTES
        for key, value in entries.items():
            name = (key[:1].hex() if isinstance(key, bytes) else key[:2]) if sharded else _WHOLE
            shards.setdefault(name, {})[key] = value
        for name, shard in shards.items():
            if self.read.get(name) != shard:
                # written over in place: a description edit at 10,000 services rewrites a hundred
                # shards (its neighbours' neighbourhoods), and removing each old file took 0.07 s
                rewrite(self.folder / name, marshal.dumps(shard))
        for name in self.read.keys() - shards.keys():
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
        self.read = shards
        self.keep()

    def keep(self) -> None:
        """Mark this space used now (``save`` does), and drop the folder's spaces but the SPACES
        most recently used, and its other versions (a code change starts one) but the last few."""
        if self.folder is not None:
            keep_recent(self.folder, SPACES)
            keep_latest(self.folder.parent)


# output folders whose entries a cache folder keeps (Shards), each as large as its catalog's
# output needs (at 10,000 services 370 MB of rendered files): a few checkouts' runs in turn keep theirs
SPACES = 4


SHARD_FROM = 1_000  # entries: below this one file holds them all, unless they are large:
# past SHARD_BYTES of text they are sharded however few (at 10,000 services the monitoring
# files' 160 blocks, 32 MB, were one file, written again whole by every port edit or service added)
SHARD_BYTES = 4 << 20


def _weight(value: object) -> int:
    """About how many bytes ``value`` takes marshalled: the lengths of its texts and bytes, at
    any depth of its dicts, tuples and lists (what an entry of a cache holds). By hand, for
    marshal's own measure is the whole payload made, and ``sys.getsizeof`` looks one level deep."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, dict):
        return sum(_weight(k) + _weight(v) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return sum(map(_weight, value))
    return 8


_WHOLE = "all"
_SHARD_NAMES = frozenset([_WHOLE, *(f"{i:02x}" for i in range(256))])
