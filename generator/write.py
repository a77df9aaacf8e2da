"""Write stage: compare the rendered files with generated/ and, if asked, replace it atomically.

The rules, so that re-running is always safe:
- unchanged files are not rewritten (their modification times stay);
- a file Nexus wrote and someone then edited is never overwritten or deleted silently:
  the run stops and names it; ``force`` overwrites after a backup under .nexus/backups/;
- team-owned files are created once and never touched;
- the new tree is built beside the old one (unchanged files hard-linked, not copied) and
  swapped in with one atomic rename, so a crash leaves the old tree or the new, never a mix.

``.nexus-manifest.json`` records the hash of every file Nexus wrote; it is how an edit by
hand is told from a file that is merely out of date.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = ".nexus-manifest.json"
# Caches that tools drop into the tree: neither ours nor the team's, never reported, not carried over.
CACHE_PARTS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules", ".hypothesis"})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Changes:
    """What a run would do. ``report()`` is what `generate --check` prints."""

    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    hand_edited: list[str] = field(default_factory=list)  # ours, changed on disk since we wrote it
    extra: list[str] = field(default_factory=list)  # on disk, not ours, not the team's: refuse to delete
    keep: list[str] = field(default_factory=list)  # on disk, stays as it is (unchanged, team-owned, team additions)
    manifest: str = ""
    manifest_stale: bool = False
    verified: frozenset[str] = frozenset()  # rendered bytes equal to what we wrote (and checked) before

    @property
    def clean(self) -> bool:
        return not (self.create or self.update or self.remove or self.hand_edited or self.extra or self.manifest_stale)

    def report(self) -> dict[str, list[str]]:
        report = {
            "missing": self.create,
            "stale": self.update + ([MANIFEST] if self.manifest_stale else []),
            "extra": self.remove + self.extra,
            "hand-edited": self.hand_edited,
        }
        return {k: sorted(v) for k, v in report.items() if v}


def _read_manifest(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _on_disk(out: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    if not out.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = sorted(d for d in dirnames if d not in CACHE_PARTS and not d.endswith(".egg-info"))
        for f in filenames:
            full = Path(dirpath, f)
            rel = full.relative_to(out).as_posix()
            if rel != MANIFEST and not f.endswith(".pyc"):
                found[rel] = full
    return found


def _service_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "services" else None


TeamOwned = Callable[[str], bool]  # is this path a team's file? (the service template declares which)


def compare(out: Path, files: dict[str, str], team_owned: TeamOwned) -> Changes:
    """Classify every rendered and every existing file. Reads, never writes."""
    recorded = _read_manifest(out)
    disk = _on_disk(out)
    live_services = {s for p in files if (s := _service_of(p))}
    ch = Changes()
    new_manifest: dict[str, str] = {}
    verified: set[str] = set()
    for path, text in files.items():
        want = sha256(text.encode("utf-8"))
        if path not in disk:
            ch.create.append(path)
            new_manifest[path] = want
            continue
        if team_owned(path):
            ch.keep.append(path)
            new_manifest[path] = recorded.get(path, want)  # the hash it was created with
            continue
        have = sha256(disk[path].read_bytes())
        new_manifest[path] = want
        if have == want:
            ch.keep.append(path)
            if recorded.get(path) == want:
                verified.add(path)
        elif recorded.get(path) == have:
            ch.update.append(path)
        else:
            ch.hand_edited.append(path)  # edited after we wrote it, or never ours
    for path, full in disk.items():
        if path in files:
            continue
        if path in recorded:
            # ours (or a team-owned file of a removed service): delete only if untouched
            (ch.remove if sha256(full.read_bytes()) == recorded[path] else ch.hand_edited).append(path)
        elif _service_of(path) in live_services:
            ch.keep.append(path)  # a team's own addition to its service folder
        else:
            ch.extra.append(path)
    ch.manifest = json.dumps({"version": 1, "files": dict(sorted(new_manifest.items()))}, indent=1, sort_keys=True) + "\n"
    try:
        ch.manifest_stale = (out / MANIFEST).read_text(encoding="utf-8") != ch.manifest
    except OSError:
        ch.manifest_stale = True
    for bucket in (ch.create, ch.update, ch.remove, ch.hand_edited, ch.extra, ch.keep):
        bucket.sort()
    ch.verified = frozenset(verified)
    return ch


def untouched(out: Path, team_owned: TeamOwned) -> int | None:
    """The number of files, when ``out`` is exactly as the last run left it (every file Nexus
    wrote still has the hash the manifest records, none missing, nothing unknown beside them);
    None otherwise. Reads and hashes, never renders: the fast path of a run with nothing to do."""
    recorded = _read_manifest(out)
    if not recorded:
        return None
    disk = _on_disk(out)
    for path, digest in recorded.items():
        if path not in disk:
            return None
        if not team_owned(path) and sha256(disk[path].read_bytes()) != digest:
            return None
    live = {s for p in recorded if (s := _service_of(p))}
    if any(p not in recorded and _service_of(p) not in live for p in disk):
        return None
    return len(recorded)


# -- the atomic swap -----------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2). The standard library has no wrapper
    for it, so it is called through ctypes; False where the system does not offer it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    return bool(fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0)


def recover(out: Path) -> None:
    """Undo what a killed run left behind: a staging tree, or (without renameat2) a moved-aside
    old tree that was never replaced."""
    staging, old = _staging(out), out.with_name(f".{out.name}.nexus-old")
    if not out.exists() and old.exists():
        old.rename(out)
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)


def _staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.nexus-staging")


def apply(out: Path, files: dict[str, str], ch: Changes, *, force: bool = False, backups: Path | None = None) -> list[str]:
    """Make ``out`` hold exactly the new tree. Returns the paths written or removed."""
    from .errors import HandEditedError

    if (ch.hand_edited or ch.extra) and not force:
        raise HandEditedError(ch.hand_edited + ch.extra)
    written = [*ch.create, *ch.update, *(p for p in ch.hand_edited if p in files)]
    dropped = [*ch.remove, *(p for p in ch.hand_edited if p not in files), *ch.extra]
    if not written and not dropped and not ch.manifest_stale:
        return []
    if force and (ch.hand_edited or ch.extra):
        backup_root = backups or out.parent / ".nexus" / "backups"
        for path in ch.hand_edited + ch.extra:
            target = backup_root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / path, target)
    recover(out)
    staging = _staging(out)
    staging.mkdir(parents=True)
    try:
        for folder in sorted({str(Path(p).parent) for p in (*written, *ch.keep)}):
            (staging / folder).mkdir(parents=True, exist_ok=True)
        for path in written:
            (staging / path).write_bytes(files[path].encode("utf-8"))
        for path in ch.keep:
            dest = staging / path
            try:
                os.link(out / path, dest)  # same inode: content and modification time kept
            except OSError:
                shutil.copy2(out / path, dest)
        (staging / MANIFEST).write_text(ch.manifest, encoding="utf-8")
        if not out.exists():
            staging.rename(out)
        elif _exchange(staging, out):
            shutil.rmtree(staging)  # now holds the old tree
        else:
            old = out.with_name(f".{out.name}.nexus-old")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
    except BaseException:
        if staging.exists() and out.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(written + dropped)
