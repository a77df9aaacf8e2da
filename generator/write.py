"""Write stage: compare the rendered files with generated/ and, if asked, replace it atomically.

The rules, so that re-running is always safe:
- one run at a time per output folder (``locked``): a second run waits for the first, naming it;
- unchanged files are not rewritten (their modification times stay);
- a file Nexus wrote and someone then edited is never overwritten or deleted silently:
  the run stops and names it; ``force`` overwrites after a backup in a new folder under
  .nexus/backups/ (``backup``);
- team-owned files are created once and never touched;
- the new tree is built beside the old one (unchanged files hard-linked, not copied) and
  swapped in with one atomic rename, so a crash leaves the old tree or the new, never a mix;
  what a killed run leaves beside it is removed by the next run (``recover``);
- a folder that cannot be written (a symlink, read-only, a full disk, no permission) stops the
  run with one OutputError before the swap: the old tree stays, the staging copy is removed.

``.nexus-manifest.json`` records the hash of every file Nexus wrote; it is how an edit by
hand is told from a file that is merely out of date. It says nothing about whether the tree is
what the catalog renders: only ``compare`` (rendered bytes against disk bytes) says that.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import marshal
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Collection, Container, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from . import usercache
from .digest import of_bytes as sha256
from .digest import of_files, of_text
from .errors import EditedDuringRun, HandEditedError, OutputBusy, OutputError, printable
from .paths import tool_file, tool_folder

MANIFEST = ".nexus-manifest.json"


@dataclass
class Changes:
    """What a run would do. ``report()`` is what `generate --check` prints."""

    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    hand_edited: list[str] = field(default_factory=list)  # ours, changed on disk since we wrote it (or now a link)
    extra: list[str] = field(default_factory=list)  # on disk, not ours, not the team's: refuse to delete
    keep: list[str] = field(default_factory=list)  # on disk, stays as it is (unchanged, team-owned, team additions)
    manifest: str = ""
    manifest_stale: bool = False
    rendered: dict[str, str] = field(default_factory=dict)  # each rendered file's SHA-256: hashed once a run
    team: set[str] = field(default_factory=set)  # the rendered files that are a team's: asked once a run
    added: list[str] = field(default_factory=list)  # of ``keep``, the teams' own additions (not rendered)
    folders: list[str] = field(default_factory=list)  # the tree's folders as compared ('.' first)
    protected: list[str] = field(default_factory=list)  # of those, the read-only ones (Live.protected)
    # what ``update`` and ``remove`` files held when compared (as Nexus wrote them): looked at
    # again right before the swap (``apply``)
    compared: dict[str, str] = field(default_factory=dict)
    spare: SpareScan | None = None  # the spare ``apply`` brings up to date, when already read
    # of ``extra``, those of a folder with no manifest: not a folder Nexus wrote (``refuse_unowned``)
    unowned: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.create or self.update or self.remove or self.hand_edited or self.extra or self.manifest_stale)

    @property
    def refused(self) -> list[str]:
        """What only ``force`` may overwrite or delete."""
        return sorted(self.hand_edited + self.extra)

    def written(self, rendered: Container[str]) -> list[str]:
        """What ``apply`` writes of the ``rendered`` files: new, out of date, and (forced) edited by hand."""
        return [*self.create, *self.update, *(p for p in self.hand_edited if p in rendered)]

    def report(self) -> dict[str, list[str]]:
        report = {
            "missing": self.create,
            "stale": self.update + ([MANIFEST] if self.manifest_stale else []),
            "extra": self.remove + self.extra,
            "hand-edited": self.hand_edited,
        }
        return {k: sorted(v) for k, v in report.items() if v}


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_nofollow(path: Path) -> bytes:
    """A regular file's bytes; a symlink (ELOOP) or anything else that is not a file raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return f.read()


def _read_manifest(out: Path) -> tuple[dict[str, str], str | None]:
    """The manifest's files, and the SHA-256 of its bytes (None: there is none, or it cannot be read)."""
    import orjson  # only a run that renders reads the manifest (and has imported it already)

    try:
        payload = _read_nofollow(out / MANIFEST)
    except OSError:
        return {}, None
    digest = sha256(payload)
    try:
        data = orjson.loads(payload)  # 15 MB at 10,000 services: 3x json's speed
        files = data.get("files", {})
        if type(files) is dict and set(map(type, files.values())) <= {str}:
            # as Nexus writes it (JSON's keys are text): not copied, 160,000 entries at 10,000 services
            return files, digest
        return {str(k): str(v) for k, v in files.items()}, digest
    except (ValueError, AttributeError):
        return {}, digest


def manifest_text(files: dict[str, str]) -> str:
    """The manifest as ``json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True)``
    writes it, one file per line. With an indent the json module encodes in Python, not C: at
    10,000 services 160,000 entries took half a second of every edit. orjson writes the entries
    (sorted, indented by two) in a quarter of the json module's C encoder's time (0.02 s against
    0.09, in the comparison's worker, on an edit's path): its bytes are json's wherever it
    escaped nothing (printable ASCII alone, no backslash), and else the json module's C encoder
    writes them with the same separators. Only the frame is spelled here."""
    if not files:
        return '{\n "files": {},\n "version": 1\n}\n'
    import orjson  # only a run that renders writes a manifest (and has imported it already)

    fast = orjson.dumps(files, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    if fast.isascii() and b"\\" not in fast and b"\x7f" not in fast:
        entries = fast[4:-2].decode("ascii")  # within '{\n  ' and '\n}'
    else:
        entries = json.dumps(files, sort_keys=True, separators=(",\n  ", ": "))[1:-1]
    return '{\n "files": {\n  ' + entries + '\n },\n "version": 1\n}\n'


class _Tree(NamedTuple):
    files: dict[str, str]  # regular files: path -> full path
    odd: set[str]  # symlinks (to files or folders) and special files: never read or followed
    folders: list[str]  # every folder, '.' (the tree itself) first, links not followed


class Live(NamedTuple):
    """What ``_scan`` saw of the tree's entries, for the write to trust while it holds: each
    regular file's inode, and each folder's identity (inode, modification and change times), but
    of the folders changed too recently to trust (``settled_before``). A file replaced, removed or made
    in a folder changes the folder's times: a folder whose identity still holds has the same
    files, each the same inode (an edit in place keeps the inode)."""

    inodes: dict[str, int]
    folders: dict[str, str]
    # what the walk does not report (the manifest, tools' files: their inodes; tools' folders,
    # not entered: None), so that the tree can be listed as the next run's spare (SpareListing)
    unreported: dict[str, int | None]
    # the folders walked that someone made read-only (no owner write bit): the write refuses them
    protected: list[str]


def _folder_identity(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _scan(
    out: Path,
    live: Live | None = None,
    stamp: Stamp | None = None,
    look: Callable[[str, str, os.DirEntry[str]], None] | None = None,
) -> _Tree:
    """What the tree holds, in one walk: its regular files, its other entries, its folders (tool
    folders left out: never reported, not carried over); with ``live``, what the write may trust
    of them (a stat of each folder, which the no-op's scan does without), by ``stamp``, the file
    system's time taken before the walk (``clock``); ``look`` is shown each regular file (its
    path, full path and entry) as the walk finds it. (Plain strings, not Paths: this runs on
    every run, also the no-op one, and building 700 Path objects is a third of it.)

    Each folder is opened by a descriptor, relative to its parent's and never through a link,
    and its entries are looked at relative to it: a stat by the full path made the kernel walk
    every folder of the path again, for each of 160,000 files at 10,000 services (``look``'s
    stats, through the entry)."""
    tree = _Tree({}, set(), [])
    if not out.is_dir() or out.is_symlink():
        return tree
    files, odd, folders = tree
    folders.append(".")
    inodes = live.inodes if live is not None else None
    base = str(out) + "/"
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

    def note(folder: str, st: os.stat_result) -> None:
        # a folder's every change sets its change time
        if live is not None and st.st_ctime_ns < settled_before(st, stamp):
            live.folders[folder] = _folder_identity(st)
        if live is not None and not st.st_mode & stat.S_IWUSR:
            live.protected.append(folder)

    def walk(fd: int, prefix: str) -> None:
        with os.scandir(fd) as entries:
            for entry in entries:
                rel = prefix + entry.name
                # a regular file first (not through a link): most entries are, and one question
                # answers for them (at 10,000 services 160,000 files, asked on every run)
                if entry.is_file(follow_symlinks=False):
                    if rel == MANIFEST or tool_file(entry.name):
                        if live is not None:
                            live.unreported[rel] = entry.inode()
                        continue
                    files[rel] = full = base + rel
                    if inodes is not None:
                        inodes[rel] = entry.inode()
                    if look is not None:
                        look(rel, full, entry)
                elif entry.is_dir(follow_symlinks=False):
                    if tool_folder(entry.name):
                        if live is not None:
                            live.unreported[rel] = None
                        continue
                    try:
                        sub = os.open(entry.name, flags, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                            raise _naming(exc, base + rel) from exc
                        odd.add(rel)  # made a link (or a file) since it was listed: never followed
                        continue
                    try:
                        folders.append(rel)
                        if live is not None:  # the very folder walked, before its entries are read
                            note(rel, os.fstat(sub))
                        walk(sub, rel + "/")
                    finally:
                        os.close(sub)
                else:
                    odd.add(rel)  # a link, or a special file: never followed

    top = os.open(out, flags)
    try:
        if live is not None:
            note(".", os.fstat(top))
        walk(top, "")
    finally:
        os.close(top)
    return tree


def _naming(exc: OSError, full: str) -> OSError:
    """``exc`` (of the same class) naming ``full``: a call relative to a folder's descriptor
    names only the entry, and the message says which file of the tree could not be read."""
    return OSError(exc.errno, exc.strerror, full) if exc.errno is not None else exc


def _service_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "services" else None


TeamOwned = Callable[[str], bool]  # is this path a team's file? (the service template declares which)


def compare(
    out: Path,
    files: dict[str, str],
    team_owned: TeamOwned,
    known: Known | None = None,
    hashed: dict[str, str] | None = None,
) -> Changes:
    """Classify every rendered and every existing file by its bytes on disk. Reads, never writes.
    ``known``: hashes of files as they were when last hashed (``Known``), not read again;
    ``hashed``: the rendered files' names (digest.of_files), when the caller has them."""
    known = known or Known()
    return _classify(out, _survey(out, team_owned, known), hashed or of_files(files), team_owned, known)


class Comparison:
    """``compare``, begun before the rendered files are known: the tree is looked at at once
    (``_survey``), the rendered files' hashes are handed over once there are any (``of``) and
    classified against it (``changes``). On a large tree in a worker (parallel.ahead) forked
    before the catalog is even loaded: at 10,000 services the manifest and a stat of 160,000
    files take 1.5 s, done on the core that loading and rendering leave (beside the checks it
    was a third of their time). The identities the worker found unchanged go into ``known`` as
    a comparison here would leave them. ``close`` ends a worker whose result is not wanted."""

    def __init__(
        self,
        out: Path,
        team_owned: TeamOwned,
        known: Known,
        *,
        worth: bool,
        writing: bool = False,
        listing: Path | None = None,
    ) -> None:
        """``listing``: where the tree is listed for the next run, which has it as its spare
        (SpareListing), and where the last run listed the tree this one has as its spare."""
        from .parallel import ahead  # multiprocessing: not imported by a run with nothing to do

        spare = writing and worth  # the spare is read here, for the write

        def first() -> tuple[Survey, SpareListing | None]:
            # whether the last run's listing holds for the spare is asked before the hashes come:
            # it needs only the spare (this run's alone, under the lock), and the worker's work
            # after them is on the run's path whenever the worker finishes last
            return _survey(out, team_owned, known), _spare_listed(out, listing) if spare and listing else None

        def there(looked: tuple[Survey, SpareListing | None], payload: bytes) -> tuple[Changes, HeldApart]:
            survey, listed = looked
            hashed = marshal.loads(payload)
            ch = _classify(out, survey, hashed, team_owned, known)
            if spare and not ch.clean:
                # what the spare holds, read here too: at 10,000 services its 190,000 entries
                # were half of the write
                ch.spare = _scan_spare_of(out, ch.written(hashed), ch.keep, survey.live, listed)
                if listing is not None and not survey.tree.folders:
                    # no tree: the write lists the spare it makes of its first (SpareListing.of_first)
                    usercache.drop(listing)
            ch.rendered = {}  # the caller has them: not sent back
            return ch, known.held_apart()

        def later(looked: tuple[Survey, SpareListing | None], made: tuple[Changes, HeldApart]) -> None:
            # the tree surveyed is the spare once this run's write swaps it out: listed for the
            # next run once the answer is sent, while this run writes (at 10,000 services 0.1 to
            # 0.15 s of an edit's path whenever the survey ended last); from what the survey
            # saw, so the write's swap meanwhile changes nothing of it
            survey, ch = looked[0], made[0]
            if spare and listing is not None and not ch.clean and survey.tree.folders:
                SpareListing.write(listing, survey.tree, survey.live)

        self.known = known
        self.hashed: dict[str, str] = {}
        # at a lower priority: while this process loads and renders (beside the render's own
        # worker: three processes on two cores) the survey takes the time they leave, and it is
        # not wanted before the checks (at 10,000 services an edit took 0.15 s less, 8 pairs
        # of runs each way)
        self._job = ahead(first, there, worth=worth, nice=NICE, later=later)

    def of(self, hashed: dict[str, str]) -> None:
        """The rendered files' ``digests`` (marshalled: a tenth of pickle's time at 160,000)."""
        self.hashed = hashed
        self._job.send(marshal.dumps(hashed))

    def changes(self) -> Changes:
        ch, held = self._job.result()
        ch.rendered = self.hashed
        self.known.hold(held)
        return ch

    def close(self) -> None:
        self._job.close()


COMPARE_AHEAD_FROM = 10_000  # files (about 600 services): below this, forking costs more than it saves
# How much lower the comparison's worker runs (os.nice). 3, 8, 10 and 15 did about as well while
# the checks took longer than the survey; once they took less (the teams' files verified, the
# runs indexed), the main process waited 0.4 to 0.7 s for the survey at the checks' end, and an
# edit at 10,000 services took 4.75 s at 5 against 5.05 s at 10 (medians of ten interleaved
# rounds; 3 and 7 between them)
NICE = 5


class Survey(NamedTuple):
    """The output tree as it is, before the rendered files are known: its manifest, its
    entries, the hash of each file the manifest names (but a team's), and which of those are
    a team's (``team_owned`` is asked once a run: ``_changes`` takes the answers from here)."""

    recorded: dict[str, str]
    tree: _Tree
    hashes: dict[str, str]
    live: Live
    team: set[str]

    def hash(self, path: str, known: Known) -> str:
        found = self.hashes.get(path)
        return found if found is not None else known.hash(path, self.tree.files[path])


def _survey(out: Path, team_owned: TeamOwned, known: Known) -> Survey:
    try:
        known.stamp = clock(out)  # before the first look: what changes from now on is not trusted
        recorded, manifest = _read_manifest(out)
        hashes: dict[str, str] = {}
        team: set[str] = set()
        # Which of the manifest's files are a team's, as the record of the run that wrote this very
        # manifest says (its tree names them by presence, and every other file it names by a hash):
        # a worker forked before the catalog is loaded asked ``team_owned`` afresh for each of
        # 10,000 services, 0.2 s of the survey on an edit's path. Any other manifest, or a record
        # of other code (which may own other files), and ``team_owned`` is asked.
        teams = (
            known.hashes if known.teams and manifest is not None and known.hashes.get(MANIFEST) == manifest else None
        )

        def look(path: str, full: str, entry: os.DirEntry[str]) -> None:
            # the files _classify compares: Nexus wrote them, and a team's file is never compared;
            # each looked at as the walk finds it, by a stat relative to its folder
            if path in recorded:
                if (teams.get(path, "") is None) if teams is not None else team_owned(path):
                    team.add(path)
                    return
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    raise _naming(exc, full) from exc
                hashes[path] = known.hash(path, full, st=st)

        live = Live({}, {}, {}, [])
        tree = _scan(out, live, known.stamp, look)
        return Survey(recorded, tree, hashes, live, team)
    except OSError as exc:
        raise OutputError(explain(exc, out, "read")) from exc


def _classify(out: Path, survey: Survey, hashed: dict[str, str], team_owned: TeamOwned, known: Known) -> Changes:
    try:
        return _changes(out, survey, hashed, team_owned, known)
    except OSError as exc:
        raise OutputError(explain(exc, out, "read")) from exc


def _changes(out: Path, survey: Survey, hashed: dict[str, str], team_owned: TeamOwned, known: Known) -> Changes:
    recorded, hashes, team = survey.recorded, survey.hashes, survey.team
    disk, odd, folders = survey.tree
    ch = Changes(folders=folders, protected=survey.live.protected)
    ch.rendered = hashed
    # the manifest names every rendered file by its rendered hash, but a team's file kept on disk
    # by the hash it was created with (set below); in any order: the text sorts them
    new_manifest = dict(hashed)
    for path, want in hashed.items():
        # Most files of an edit are on disk as rendered, or a team's already there: the survey
        # answered for them (``hashes``: on disk, recorded, not a team's; ``team``: on disk,
        # recorded, a team's), and ``team_owned`` is asked only of the rest: at 10,000 services
        # asking it again for 160,000 files was a fifth of the classification.
        have = hashes.get(path)
        if have is None:
            if path in team:
                ch.keep.append(path)
                ch.team.add(path)
                new_manifest[path] = recorded[path]  # the hash it was created with
                continue
            owned = team_owned(path)
            if owned:
                ch.team.add(path)
            if path not in disk and path not in odd:
                ch.create.append(path)
                continue
            if owned:
                ch.keep.append(path)
                new_manifest[path] = recorded.get(path, want)  # the hash it was created with
                continue
            if path in odd:
                ch.hand_edited.append(path)  # a link (or a special file) where we write a file: never followed
                continue
            have = known.hash(path, disk[path])  # on disk, not a team's, not in the manifest
        if have == want:
            ch.keep.append(path)
        elif recorded.get(path) == have:
            ch.update.append(path)
            ch.compared[path] = have
        else:
            ch.hand_edited.append(path)  # edited after we wrote it, or never ours
    live_services: set[str] | None = None  # asked only for a file on disk that is neither rendered nor recorded
    # the entries on disk that are not rendered: looked for only when there are some (every rendered
    # file not created is on disk): at 10,000 services, 160,000 lookups to find none
    unrendered = len(disk) + len(odd) - (len(hashed) - len(ch.create))
    for path in sorted(odd.union(disk).difference(hashed)) if unrendered else ():
        if path in recorded:
            # ours (or a team-owned file of a removed service): delete only if untouched
            untouched = path in disk and survey.hash(path, known) == recorded[path]
            (ch.remove if untouched else ch.hand_edited).append(path)
            if untouched:
                ch.compared[path] = recorded[path]
            continue
        if live_services is None:
            live_services = {s for p in hashed if (s := _service_of(p))}
        if _service_of(path) in live_services:
            ch.keep.append(path)  # a team's own addition to its service folder
            ch.added.append(path)
        else:
            ch.extra.append(path)
    ch.manifest = manifest_text(new_manifest)
    try:
        ch.manifest_stale = _read_nofollow(out / MANIFEST) != ch.manifest.encode("utf-8")
    except OSError:
        ch.manifest_stale = True
        ch.unowned = ch.extra  # no manifest: the files Nexus would not write are someone else's
    for bucket in (ch.create, ch.update, ch.remove, ch.hand_edited, ch.extra, ch.keep):
        bucket.sort()
    return ch


# -- the record of a clean tree (kept outside it by the caller) ----------------------------------------

Expected = dict[str, "str | None"]  # path -> SHA-256 of its bytes, or None: present, its content the team's


def expected(files: dict[str, str], ch: Changes) -> Expected:
    """What the tree holds once ``ch`` is applied (or, ``ch.clean``, holds now): every rendered
    file by the hash of its rendered bytes, the teams' files by presence, and the manifest."""
    hashed = ch.rendered
    # every rendered file is hashed once a run (``digests``, ``Comparison.of``: the same paths):
    # copied whole, in C, rather than looked up one by one. At 10,000 services each pass over
    # 160,000 paths costs about 0.02 s (whatever does it: the strings are out of the CPU's
    # caches), so the paths are not compared again, nor the kept files looked through for
    # the teams' additions (``added``, as the comparison found them)
    tree: Expected = (
        dict(hashed) if len(hashed) == len(files) else {p: hashed.get(p) or of_text(t) for p, t in files.items()}
    )
    tree.update(dict.fromkeys(ch.team))
    tree.update(dict.fromkeys(ch.added))
    tree[MANIFEST] = sha256(ch.manifest.encode("utf-8"))
    return tree


def matches(out: Path, tree: Expected, known: Known | None = None) -> bool:
    """Whether ``out`` holds exactly ``tree``: the same paths, each hashed file with the same
    bytes. Hashes every file (but those ``known`` unchanged), never renders: the fast path of a
    run with nothing to do."""
    known = known or Known()
    known.stamp = clock(out)
    try:
        disk, odd, _ = _scan(out)
        if odd.union(disk, (MANIFEST,)) != tree.keys() or any(tree[p] is not None for p in odd):
            return False
        if sha256(_read_nofollow(out / MANIFEST)) != tree[MANIFEST]:
            return False
        return all(
            want is None or known.hash(p, disk[p], hold=False) == want for p, want in tree.items() if p != MANIFEST
        )
    except OSError:
        return False  # the full comparison will say what is wrong


class Known:
    """Files hashed by an earlier run, each with its identity then (size, modification and
    change times, inode): a file whose identity is the same now has the same bytes, and is not
    read again. At 10,000 services reading and hashing the whole tree was most of a run with
    nothing to do, and a tenth of an edit's. (git's index does the same.) A file is only trusted
    if it had last changed before its identity was taken, by the file system's own clock
    (``settled_before``): a write within the same tick of its timestamps could otherwise keep
    the same times. The change time cannot be set back by anyone (touch, tar, rsync set only
    the modification time), and a file replaced by another has another inode. A write sets both
    times to its own: one of them older than the stamp is enough (each run's hard links renew
    the change time of every file it keeps; their modification time stays old)."""

    # Where the file system's clock cannot be read (a check without a lock, a mount inside the
    # tree), the local clock less this: coarser than any file system's timestamps Nexus may
    # meet (FAT: 2 s), and than the skew of a network file system's server most of the time
    RACY_NS = 2_000_000_000

    def __init__(
        self,
        hashes: dict[str, str | None] | None = None,
        ids: dict[str, str] | None = None,
        *,
        teams: bool = False,
    ) -> None:
        self.hashes = hashes or {}
        self.ids = ids or {}
        # ``hashes`` is a tree the same code recorded (``expected``): a file it names by presence
        # (None) that the manifest it recorded names too is a team's, as ``team_owned`` would say
        self.teams = teams
        # each file's identity when this run hashed it (``hash``), or found it unchanged: the
        # identity the bytes it compared go with
        self.held: dict[str, str] = {}
        # the files held with an identity of their own, not the recorded one (read, ``hash``)
        self.read: list[str] = []
        # the file system's time before the files were looked at (``clock``; set where they are)
        self.stamp: Stamp | None = None

    @staticmethod
    def identity(st: os.stat_result) -> str:
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"

    def hash(self, path: str, full: str, *, hold: bool = True, st: os.stat_result | None = None) -> str:
        """The SHA-256 of ``full``'s bytes: the one recorded for ``path`` when its identity holds.
        A file read is held with its identity from before the read: a change during or after
        the read changes it, so the identity never vouches for bytes other than those hashed.
        (Not ``hold``: nothing will be recorded, and a file with no identity recorded is read
        without a stat.) ``st``: the file's lstat, taken by the caller just now (``_survey``)."""
        recorded, was = self.hashes.get(path), self.ids.get(path)
        if was is None and not hold:
            return sha256(_read(full))
        if st is None:
            st = os.lstat(full)
        identity = self.identity(st)
        if recorded is not None and was is not None and identity == was:
            self.held[path] = was
            return recorded
        digest = sha256(_read(full))
        if settled(st, self.stamp):
            self.held[path] = identity
            self.read.append(path)
        return digest

    def held_apart(self) -> HeldApart:
        """``held``, as what sets it apart from ``ids`` (which the process that forked a worker
        has too: ``Comparison``): nearly every file is held with its recorded identity, and at
        10,000 services sending all 130,000 back took the main process 0.05 s to unpickle."""
        held = self.held
        anew = {p: held[p] for p in self.read if p in held}
        # every recorded identity held (all the files held, but those held anew with no recorded one)?
        if len(held) - sum(p not in self.ids for p in anew) == len(self.ids):
            return HeldApart(set(), anew)
        return HeldApart(self.ids.keys() - held.keys(), anew)

    def hold(self, apart: HeldApart) -> None:
        """``held`` as ``held_apart`` gave it, in the process whose ``ids`` it was set apart from."""
        held = dict(self.ids)
        for path in apart.gone:
            del held[path]
        held.update(apart.anew)
        self.held = held

    def taken(
        self,
        out: Path,
        tree: Expected,
        changed: Iterable[str] = (),
        linked: Iterable[str] = (),
        stamp: Stamp | None = None,
    ) -> dict[str, str]:
        """The identities of ``tree``'s hashed files, for the next run to trust: a file this run
        hashed or found unchanged (``held``) and did not write or link again has that identity
        still, or another the next run will not trust (no system call here for them: at 10,000
        services a second's worth); one it wrote (``changed``) is looked at now, and trusted
        only if it last changed before ``stamp``, the file system's time right before the new
        tree was swapped in (``Applied.stamp``): until then the file was in the staging folder,
        ours alone, and an edit made once it was in place (before this record) has a later
        time; it would otherwise be recorded with the hash this run rendered, and no later run
        would see it. A kept file ``linked`` into the new tree has a new change
        time, and the bytes compared only while it is the very file held (inode, size and
        modification time): one replaced or edited in place since was linked as it was then,
        and is left to the next run to hash, never trusted with the hash this run rendered.
        Files neither held nor written (too recent when compared) are left to the next run."""
        base = str(out)
        held = self.held.copy()
        looked: dict[str, str | None] = {}
        for path in changed:
            held.pop(path, None)
            looked[path] = None
        for path in linked:
            was = held.pop(path, None)
            looked[path] = _without_change_time(was) if was is not None else ""
        # keyed by the tree's own paths, not the equal strings held: the record's marshal writes
        # each path once and refers to it again (keyed by the comparison's strings, the record at
        # 10,000 services was 4 MB larger, and slower to write and to read on every run)
        ids = {path: was for path, want in tree.items() if want is not None and (was := held.get(path)) is not None}
        ids.pop(MANIFEST, None)
        for path, seen in looked.items():
            if seen == "" or path == MANIFEST or tree.get(path) is None:
                continue  # compared by bytes too recently written to trust, or linked unheld; or not the tree's
            try:
                st = os.lstat(os.path.join(base, path))
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not settled(st, stamp):
                continue
            identity = self.identity(st)
            if seen is not None and seen != _without_change_time(identity):
                continue  # not the file compared: replaced or edited since
            ids[path] = identity
        return ids


class HeldApart(NamedTuple):
    """``Known.held`` against ``Known.ids`` (``Known.held_apart``)."""

    gone: set[str]  # recorded, not held
    anew: dict[str, str]  # held with an identity of its own (read this run)


def _without_change_time(identity: str) -> str:
    size, mtime, _, inode = identity.split(":")
    return f"{size}:{mtime}:{inode}"


class Stamp(NamedTuple):
    """A file system's time, as it stamps files (``clock``)."""

    device: int
    ns: int


def clock(out: Path) -> Stamp | None:
    """The time of ``out``'s file system now, read the way it stamps files: the output's lock
    file (beside the tree, ours while a run holds it) given the current time, and its times
    read back. A file whose times are older was last written in an earlier tick of that clock,
    so any write from now on changes them, whatever the timestamps' granularity (FAT's 2 s,
    ext4's clock tick) and however far a network file system's server clock is from ours.
    None where the lock file cannot be touched (a check in a read-only checkout)."""
    path = lock_path(out)
    try:
        os.utime(path, follow_symlinks=False)  # never a planted link's target
        st = os.lstat(path)
    except (OSError, NotImplementedError):
        return None
    return Stamp(st.st_dev, min(st.st_mtime_ns, st.st_ctime_ns)) if stat.S_ISREG(st.st_mode) else None


def _next_tick(out: Path, patience: float = 0.1) -> Stamp | None:
    """A stamp of ``out``'s file system (``clock``) later than its time now: whatever changed
    before this call is then older than the stamp, however coarse the clock. None when the
    clock cannot be read, or has not moved within ``patience`` seconds."""
    now = clock(out)
    deadline = time.monotonic() + patience
    while now is not None and time.monotonic() < deadline:
        time.sleep(0.001)
        later = clock(out)
        if later is None or later.device != now.device:
            return None
        if later.ns > now.ns:
            return later
    return None


def settled_before(st: os.stat_result, stamp: Stamp | None) -> int:
    """The time before which the file or folder ``st`` describes must have changed for its
    identity to vouch for its content: ``stamp``, taken on its file system before it was
    looked at; elsewhere (no stamp, or another file system mounted inside the tree) the local
    clock less ``Known.RACY_NS``."""
    if stamp is not None and st.st_dev == stamp.device:
        return stamp.ns
    return time.time_ns() - Known.RACY_NS


def settled(st: os.stat_result, stamp: Stamp | None) -> bool:
    """Whether the file ``st`` describes may be trusted by its identity: one of its times (a
    write sets both) is older than ``settled_before``."""
    return min(st.st_mtime_ns, st.st_ctime_ns) < settled_before(st, stamp)


# -- one run at a time ---------------------------------------------------------------------------


def lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.nexus-lock")


@contextmanager
def locked(
    out: Path, *, timeout: float = 300.0, waiting: Callable[[str], None] | None = None, required: bool = True
) -> Iterator[None]:
    """Hold the output folder's lock: an flock on a file beside it, so the kernel drops it when
    its holder dies, however it dies (a lock left by a killed run is simply free).

    While another run holds it, wait (telling ``waiting`` once who holds it), up to ``timeout``
    seconds, then raise OutputBusy. The holder's pid and command are written in the lock file for
    that message. ``required=False`` (a read-only check) goes on without a lock where none can be
    created (a read-only checkout). Held already by this process (`nexus new`, around its run),
    it is held on: a second flock of the same file, from this process, would wait for itself."""
    path = lock_path(out)
    if path in _HELD:
        yield
        return
    try:
        if required:
            out.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputError(
                f"{path} is a symbolic link; Nexus keeps its lock there and will not follow a link: "
                "remove it and run again"
            ) from exc
        if not required and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
            yield
            return
        raise OutputError(explain(exc, out, "lock")) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputError(f"{path} is not a regular file; Nexus keeps its lock there: remove it and run again")
        _acquire(fd, path, out, timeout, waiting)
        with suppress(OSError):  # only for the message a waiting run prints (a full disk, another user's file)
            os.ftruncate(fd, 0)
            # the arguments' own bytes (one not UTF-8 is read as a lone surrogate, which strict UTF-8 refuses)
            os.pwrite(fd, os.fsencode(f"{os.getpid()} {' '.join(['nexus', *sys.argv[1:]])}\n"), 0)
        _HELD.add(path)
        try:
            yield
        finally:
            _HELD.discard(path)
            with suppress(OSError):
                os.ftruncate(fd, 0)  # nobody waiting should read a finished run's pid
    finally:
        os.close(fd)  # releases the flock


_HELD: set[Path] = set()  # the locks this process holds (``locked``)


def _open_lock(path: Path) -> int:
    # O_NOFOLLOW: a planted symlink must not make us create or write a file elsewhere;
    # O_NONBLOCK: a planted FIFO must not hang the open
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except PermissionError:
        return os.open(path, os.O_RDONLY | flags)  # another user's lock file: flock needs no write access


def _acquire(fd: int, path: Path, out: Path, timeout: float, waiting: Callable[[str], None] | None) -> None:
    # flock has no timeout of its own: poll it, which also lets Ctrl-C through at once
    start = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        pid, holder = _holder(path)
        waited = time.monotonic() - start
        if not told and waiting is not None and (pid is not None or waited > 1.0):
            waiting(f"waiting for {holder} to finish with {out} ...")
            told = True
        if waited >= timeout:
            stop = f"stop it (kill {pid})" if pid is not None else "stop it"
            raise OutputBusy(
                f"{out} is in use by {holder} and stayed so for {timeout:.0f} s; "
                f"if that run is stuck, {stop} and run again"
            )
        time.sleep(0.05)


def _holder(path: Path) -> tuple[int | None, str]:
    """The holder's pid and 'nexus generate (pid 123)', from the lock file; one that has not
    written it yet (or could not: another user's file) is unnamed."""
    try:
        pid, _, command = _read_nofollow(path).decode("utf-8", "replace").strip().partition(" ")
    except OSError:
        pid, command = "", ""
    if not pid.isdigit():
        return None, "another nexus run"
    return int(pid), f"{printable(command) or 'nexus'} (pid {pid})"


# -- what a killed run leaves behind ----------------------------------------------------------------


def _staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.nexus-staging")


def _old(out: Path) -> Path:
    return out.with_name(f".{out.name}.nexus-old")


def _spare_staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.nexus-spare")


def _remove(path: Path) -> None:
    """Remove a file, a link (never followed) or a folder; nothing there is fine."""
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def recover(out: Path) -> None:
    """Undo what a killed run left behind: a staging tree, a first spare's folders, or (without
    renameat2) a moved-aside old tree that was never replaced. Runs under the lock, at the start
    of every writing run."""
    staging, old = _staging(out), _old(out)
    try:
        if not os.path.lexists(out) and old.is_dir() and not old.is_symlink():
            old.rename(out)
        for leftover in (staging, old, _spare_staging(out)):
            _remove(leftover)
    except OSError as exc:
        raise OutputError(
            f"cannot remove what an earlier run left beside {out}: {exc.strerror} ({exc.filename}); "
            "delete it by hand and run again"
        ) from exc


# -- refusals before anything is written ------------------------------------------------------------


def refuse_link(out: Path) -> None:
    """generated/ must be a real folder: the swap replaces it as a whole, and a link could point
    anywhere (a pull request can commit one). Following it would write and delete out there."""
    if out.is_symlink():
        real = os.path.realpath(out)
        raise OutputError(
            f"{out} is a symbolic link (to {os.readlink(out)}); Nexus replaces that folder as a whole and "
            f"will not follow a link: make it a real folder, or pass --out {real} to write there"
        )
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(f"{out} is not a folder; move it away and run again")
    if not out.name or out.parent == out:
        raise OutputError(f"{out} is the file system's root; give --out a folder of its own")


def refuse_holding(out: Path, catalog: str | Path) -> None:
    """The output folder is replaced whole: it may not be the catalog's own folder, nor hold it
    deeper down (`--out .` beside catalog.yaml, `--out ~`): the swap would take the catalog,
    and everything beside it, out of the project."""
    source, real = Path(os.path.realpath(catalog)), Path(os.path.realpath(out))
    if real in source.parents and real.parent != real:  # the root has a refusal of its own (refuse_link)
        raise OutputError(
            f"{out} holds the catalog ({catalog}), and Nexus replaces its output folder whole: "
            "give --out a folder of its own (by default generated/ beside the catalog)"
        )


def refuse_unowned(out: Path, ch: Changes) -> None:
    """A folder with no manifest that holds files Nexus would not write is not a folder Nexus
    made (someone's project, a home folder): ``--force`` overwrites what Nexus wrote and someone
    edited, never such a folder, so refuse whatever the run was asked."""
    if ch.unowned:
        shown = _some(ch.unowned)
        raise OutputError(
            f"{out} is not a folder Nexus wrote (it has no {MANIFEST}) and holds files Nexus would not "
            f"write: {shown}; a run replaces that folder whole: give --out a new or empty folder, or move "
            "those files out; nothing was written"
        )


def _some(paths: list[str], shown: int = 5) -> str:
    """The first ``shown`` of ``paths`` and how many more: a refusal names a few, not 230,000."""
    return ", ".join(paths[:shown]) + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def _refuse_protected(out: Path, ch: Changes) -> None:
    """A folder or file someone made read-only (no owner write bit) stays so: the swap would
    put writable copies in its place, silently dropping the protection, so refuse instead.
    (The mode bits, not access(): root may write anything, but the protection is still meant.)"""
    if not out.is_dir():
        return
    touched = [*ch.update, *ch.remove, *ch.hand_edited, *ch.extra]
    base = str(out)
    # the folders as the comparison's walk found them (``Live.protected``: it took each one's
    # stat): walking the tree a second time was half a second of an edit at 10,000 services,
    # and a stat of each of its 35,000 folders again 0.06 s more, after the checks, with the
    # other core idle. A protection is made before a run, which the walk is the first to see.
    protected = [f"{p}/" for p in ch.protected]
    protected += [
        p
        for p in touched
        if os.path.lexists(os.path.join(base, p)) and not os.lstat(os.path.join(base, p)).st_mode & stat.S_IWUSR
    ]
    if protected:
        shown = _some(sorted(protected))
        raise OutputError(
            f"{out} is write-protected ({shown} read-only); Nexus will not remove that protection: "
            f"make it writable (chmod -R u+w {out}) and run again; nothing was written"
        )


# -- backups -------------------------------------------------------------------------------------------


def backup(out: Path, paths: list[str], root: Path) -> Path:
    """Copy each of ``paths`` (under ``out``) into a new folder ``root/<UTC date-time>`` (``-2``,
    ``-3``... when one exists already): a backup is never overwritten. Every folder from
    ``root``'s parent down is opened without following links, so a link planted in .nexus/ or
    .nexus/backups/ cannot send the copies out of the project; a link being backed up is copied
    as a link. Returns the new folder; on failure it is removed and OutputError raised."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    fds: list[int] = []
    name = None
    try:
        fds.append(os.open(root.parent.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        fds.append(_subfolder(fds[-1], root.parent.name, root.parent))
        fds.append(_subfolder(fds[-1], root.name, root))
        name, n = stamp, 1
        while True:
            try:
                os.mkdir(name, 0o700, dir_fd=fds[2])
                break
            except FileExistsError:
                n += 1
                name = f"{stamp}-{n}"
        fds.append(_subfolder(fds[2], name, root / name))
        for path in paths:
            _copy_into(out / path, fds[3], path.split("/"))
        return root / name
    except BaseException as exc:
        if name is not None:
            with suppress(OSError):
                shutil.rmtree(name, dir_fd=fds[2])
        if isinstance(exc, OSError):
            raise OutputError(explain(exc, out, "back up")) from exc
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _subfolder(parent: int, name: str, where: Path) -> int:
    """Open (creating it if needed) folder ``name`` in ``parent`` (shown as ``where``), refusing a link."""
    with suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OutputError(
                f"{where} is a symbolic link or not a folder; Nexus will not write a backup through it: "
                "remove it and run again; nothing was written"
            ) from exc
        raise


def _copy_into(src: Path, folder: int, parts: list[str]) -> None:
    fds: list[int] = []
    try:
        for part in parts[:-1]:
            fds.append(_subfolder(fds[-1] if fds else folder, part, Path(part)))
        here = fds[-1] if fds else folder
        info = os.lstat(src)
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(src), parts[-1], dir_fd=here)
            return
        data = _read_nofollow(src)
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=here)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.utime(f.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
    finally:
        for fd in fds:
            os.close(fd)


# -- the atomic swap -----------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2). The standard library has no wrapper
    for it, so it is called through ctypes; False where the system or file system does not
    offer it, OSError for any other failure."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(staging: Path, out: Path) -> Path | None:
    """Put ``staging`` in ``out``'s place; returns where the old tree now is (to be removed)."""
    if not os.path.lexists(out):
        staging.rename(out)
        return None
    if _exchange(staging, out):
        return staging  # now holds the old tree
    old = _old(out)
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    return old


@dataclass
class Applied:
    touched: list[str]  # written or removed, sorted
    backup: Path | None = None  # where the files --force overwrote were copied
    linked: list[str] = field(default_factory=list)  # kept files linked into the new tree (their change time is new)
    # the file system's time right before the new tree was swapped in (``clock``): for ``Known.taken``
    stamp: Stamp | None = None


def apply(
    out: Path,
    files: dict[str, str],
    ch: Changes,
    *,
    force: bool = False,
    backups: Path | None = None,
    listing: Path | None = None,
) -> Applied:
    """Make ``out`` hold exactly the new tree. Raises HandEditedError (refused files, no
    ``force``) or OutputError (the folder cannot be written) before anything changes.
    ``listing``: where a first tree's spare is listed for the next run (SpareListing.of_first),
    when the tree is large enough for the next run to read its spare in the comparison's worker."""
    refuse_unowned(out, ch)
    if ch.refused and not force:
        raise HandEditedError(ch.refused, added=ch.extra)
    written = ch.written(files)
    dropped = [*ch.remove, *(p for p in ch.hand_edited if p not in files), *ch.extra]
    if not written and not dropped and not ch.manifest_stale:
        return Applied([])
    refuse_link(out)
    try:
        _refuse_protected(out, ch)
    except OSError as exc:
        raise OutputError(explain(exc, out, "read")) from exc
    saved = backup(out, ch.refused, backups or out.parent / ".nexus" / "backups") if ch.refused else None
    staging = _staging(out)
    # a first tree replaces none to keep as the spare: one is made beside it (_first_spare)
    spare_folders = None if os.path.lexists(out) else _first_spare_folders(out, [*written, *ch.keep])
    try:
        _remove(staging)  # a caller that skipped recover()
        if _take_spare(out, staging):
            linked = _reconcile(str(staging), str(out), files, written, ch.keep, ch.spare, ch.folders)
        else:
            linked = _build(str(staging), str(out), files, written, ch.keep)
        (staging / MANIFEST).write_text(ch.manifest, encoding="utf-8")
        _unchanged_since_compared(out, ch)
        stamp = clock(out)  # what this run wrote is older; what anyone writes once it is in place is not
        old = _swap(staging, out)
    except OSError as exc:
        with suppress(OSError):
            _remove(staging)
        _first_spare(out, [], spare_folders, wanted=False)
        raise OutputError(
            explain(exc, out, "write") + (f"; the hand-edited files are backed up in {saved}" if saved else "")
        ) from exc
    except BaseException:
        with suppress(OSError):
            _remove(staging)
        _first_spare(out, [], spare_folders, wanted=False)
        raise
    if old is not None:
        _keep_spare(out, old)  # the new tree is in place; the next run brings this one up to date
    paths = [*written, *ch.keep]
    if _first_spare(out, paths, spare_folders) and listing is not None and len(paths) >= COMPARE_AHEAD_FROM:
        SpareListing.of_first(out, listing)
    return Applied(sorted(written + dropped), saved, linked, stamp)


def _unchanged_since_compared(out: Path, ch: Changes) -> None:
    """Raise EditedDuringRun when a file the write replaces or removes changed, or one appeared
    where it creates one, since ``compare`` looked (a hand edit made while the run rendered and
    checked: seconds at 10,000 services). Looked at last, right before the swap, so such an edit
    is refused, not swapped out of the tree. What it costs is what the run changes. (A file the
    run keeps is linked from the live tree as it is then: see _reconcile.)"""
    # files where it creates one; with no tree when compared, any file of one that appeared since
    base = str(out)
    late = [p for p in ch.create if os.path.lexists(f"{base}/{p}")] if ch.folders else sorted(_scan(out).files)
    for path, was in ch.compared.items():
        try:
            now: str | None = sha256(_read_nofollow(out / path))
        except FileNotFoundError:
            now = None  # gone: nothing of it to lose
        except OSError:
            now = ""  # a link or a special file now: not what was compared
        if now is not None and now != was:
            late.append(path)
    if late:
        raise EditedDuringRun(sorted(late))


def _build(root: str, base: str, files: dict[str, str], written: list[str], keep: list[str]) -> list[str]:
    """The new tree from nothing in ``root``: the written files, the kept ones hard-linked from
    ``base`` (returned). (Plain strings, not Paths: a tree of 10,000 services is 200,000 names, and
    building a Path for each cost more than the links themselves.)"""
    os.makedirs(root)
    for folder in sorted({os.path.dirname(p) for p in (*written, *keep)} - {""}):
        os.makedirs(f"{root}/{folder}", exist_ok=True)
    for path in written:
        _write_new(f"{root}/{path}", files[path])
    for path in keep:
        _link(f"{base}/{path}", f"{root}/{path}")
    return keep


class SpareScan(NamedTuple):
    """What a spare tree holds against the new tree: each wanted regular file's inode, the wanted
    folders it has, and what goes (folders whole, and files: links and special files whatever
    their name, nothing in it is followed). Paths are relative to the spare's root."""

    have: dict[str, int]  # with ``live``, only of the files the write looks at
    make_folders: list[str]  # wanted, missing (sorted: parents first)
    drop_folders: list[str]
    drop_files: list[str]
    # with ``live`` (scan_spare): the kept files whose inode the spare does not have (as the
    # tree had it when surveyed), and those folder identities; else None: the write looks at
    # every kept file
    relink: list[str] | None = None
    folders: dict[str, str] | None = None


def scan_spare(root: str, written: list[str], keep: list[str], live: Live | None = None) -> SpareScan:
    """Read, never change: can run in the comparison's worker, beside the checks (``_scan_spare_of``).
    With ``live`` (what the survey saw of the tree), it settles which kept files need linking:
    the write then looks only at those and at the kept files of folders changed since (a stat
    of each folder, not of each file)."""
    wanted, folders = _new_tree(written, keep)
    found = SpareScan({}, [], [], [])
    have, drop_folders, drop_files = found.have, found.drop_folders, found.drop_files
    # with ``live``, the files found that are not the tree's very inode (a kept one among them is
    # linked again), told as each is found, its name just hashed: a second pass over 160,000 kept
    # files, two lookups in large tables each, was a fifth of the scan at 10,000 services
    tree_inode = live.inodes.get if live is not None else None
    differ: set[str] = set()
    seen = {""}
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if rel in folders:
                        seen.add(rel)
                        pending.append((entry.path, rel + "/"))
                    else:
                        drop_folders.append(rel)
                elif entry.is_file(follow_symlinks=False) and rel in wanted:
                    have[rel] = inode = entry.inode()
                    if tree_inode is not None and tree_inode(rel) != inode:
                        differ.add(rel)
                else:
                    drop_files.append(rel)
    found.make_folders.extend(sorted(folders - seen))
    if live is None:
        return found
    return _settle(found, have, have, differ, written, keep, live)


def _new_tree(written: list[str], keep: list[str]) -> tuple[set[str], set[str]]:
    """The new tree's files (the manifest too) and folders, which a spare is brought to."""
    wanted = {*written, *keep, MANIFEST}
    return wanted, _folders_of(wanted)


def _settle(
    found: SpareScan,
    held: Collection[str],
    inodes: dict[str, int],
    differ: set[str],
    written: list[str],
    keep: list[str],
    live: Live,
) -> SpareScan:
    """``found``, what the spare holds of the new tree, settled against the tree as surveyed
    (``live``): the kept files to link again, and the files the write looks at. ``held``: the
    new tree's files the spare has, ``inodes`` has theirs; ``differ`` holds those whose inode
    is not the tree's (and may hold others)."""
    # every kept file is in the spare (the spare holds as many files as the kept ones, once the
    # others are counted out): those to link again are those found to differ; else, one by one
    others = {*written, MANIFEST}
    if len(held) - sum(p in held for p in others) == len(keep):
        relink = [p for p in keep if p in differ]
    else:
        relink = [p for p in keep if inodes.get(p, -1) != live.inodes.get(p)]
    looked = {p: inodes[p] for p in (*written, *relink, MANIFEST) if p in held}
    return found._replace(have=looked, relink=relink, folders=live.folders)


_LISTING_VERSION = 1


class SpareListing(NamedTuple):
    """A tree as the comparison's survey walked it, kept in the user's cache for the next run,
    which has that tree as its spare once this run's write swaps it out (``Comparison``). That
    run then looks at each folder (``holds``) instead of walking the spare (``scan``): a folder
    whose identity still holds has the same entries, each the same inode (Live), and the
    spare's own folder, renamed by the swap, is listed anew. At 10,000 services the walk of
    193,000 entries was 0.6 s of the worker's, on the edit's path; 35,000 folders' stats are
    a sixth of it. A listing that does not hold (no swap since, anything changed in the
    spare) is not used: the spare is walked, as before."""

    files: dict[str, int]  # every regular file (the manifest and tools' files too): its inode
    folders: dict[str, str]  # every folder but the tree's own: its identity (_folder_identity)
    unentered: list[str]  # tools' folders: not walked
    odd: list[str]  # links and special files

    @classmethod
    def read(cls, file: Path) -> SpareListing | None:
        payload = usercache.read(file)
        if payload is None:
            return None
        try:
            version, *fields = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            return None
        # the shape checked too: a listing that is not one is never used (its spare is walked)
        shape = (dict, dict, list, list)
        if version != _LISTING_VERSION or [type(f) for f in fields] != list(shape):
            return None
        return cls(*fields)

    @staticmethod
    def write(file: Path, tree: _Tree, live: Live) -> None:
        """List ``tree`` as the walk that made ``live`` saw it; when a folder of it had changed
        too recently for its identity to vouch for its entries (``settled_before``), remove
        the listing instead: the next run walks its spare."""
        folders = {f: identity for f, identity in live.folders.items() if f != "."}
        if len(folders) != len(tree.folders) - 1:  # tree.folders: "." and every other folder
            usercache.drop(file)
            return
        files = dict(live.inodes)
        unentered = []
        for rel, inode in live.unreported.items():
            if inode is None:
                unentered.append(rel)
            else:
                files[rel] = inode
        usercache.write(file, marshal.dumps((_LISTING_VERSION, files, folders, unentered, sorted(tree.odd))))

    @staticmethod
    def of_first(out: Path, file: Path) -> None:
        """List the spare a first tree left (``_first_spare``) as it is now, for the next run:
        no survey saw it, and without a listing the first edit walked it (0.3 to 0.6 s at
        10,000 services, on that edit's path). Its folders were all filled just now, and a
        folder's identity vouches for its entries only once the file system's clock has moved
        past its last change: the walk waits for the clock's next tick (``_next_tick``). When
        the clock cannot be read, or does not move soon (a coarse one: FAT's 2 s), nothing is
        listed and the next run walks the spare, as before."""
        stamp = _next_tick(out)
        live = Live({}, {}, {}, [])
        try:
            tree = _scan(_spare(out), live, stamp) if stamp is not None else None
        except OSError:
            tree = None
        if tree is None:
            usercache.drop(file)
            return
        SpareListing.write(file, tree, live)

    def holds(self, root: str) -> bool:
        """Whether the tree at ``root`` holds what this lists: its own entries listed again
        (the swap renamed it, which changed its times), every other folder by its identity."""
        odd, unentered = set(self.odd), set(self.unentered)
        top = sum("/" not in rel for rel in (*self.folders, *self.unentered, *self.odd))
        top += sum("/" not in rel for rel in self.files)
        try:
            with os.scandir(root) as entries:
                for entry in entries:
                    name = entry.name
                    if entry.is_symlink():
                        ok = name in odd
                    elif entry.is_dir():
                        ok = name in self.folders or name in unentered
                    elif entry.is_file():
                        ok = self.files.get(name) == entry.inode()
                    else:
                        ok = name in odd
                    if not ok:
                        return False
                    top -= 1
            if top != 0:
                return False
            for rel, was in self.folders.items():
                if _folder_identity(os.lstat(f"{root}/{rel}")) != was:
                    return False
        except OSError:
            return False
        return True

    def scan(self, written: list[str], keep: list[str], live: Live) -> SpareScan | None:
        """What ``scan_spare`` finds in the tree this lists (which ``holds``), without walking
        it; None when the new tree has a file in a folder the survey did not enter (a tool's)."""
        wanted, folders = _new_tree(written, keep)
        if not folders.isdisjoint(self.unentered):
            return None

        def entered(rel: str) -> bool:  # by the walk: the spare's own folder, and the wanted ones
            parent = rel.rpartition("/")[0]
            return not parent or parent in folders

        listed = self.files
        found = SpareScan(
            {},  # _settle: those the write looks at
            sorted(folders - self.folders.keys()),
            sorted(filter(entered, [*(self.folders.keys() - folders), *self.unentered])),
            sorted(filter(entered, [*(listed.keys() - wanted), *self.odd])),
        )
        # set operations and one pass of comprehensions over 160,000 entries, not a lookup in
        # large tables for each (the walk's loop has one too, and this is what replaces it)
        tree_inode = live.inodes.get
        differ = {p for p, inode in listed.items() if tree_inode(p) != inode}
        return _settle(found, listed.keys() & wanted, listed, differ, written, keep, live)


def _reconcile(
    root: str,
    base: str,
    files: dict[str, str],
    written: list[str],
    keep: list[str],
    scanned: SpareScan | None,
    walked: list[str] | None = None,
) -> list[str]:
    """Bring ``root``, a tree this folder held before (the spare), to the new tree in place:
    what the new tree does not hold goes, each written file is made anew (the spare's may be a
    hard link to the live one: it is unlinked, never written through), and each kept file is
    linked again unless it is already the live file's inode (the ones linked are returned).
    ``scanned``: what the spare holds, when the comparison's worker read it already (the spare
    is this run's alone, under the lock), settled against the tree it surveyed: then only the
    kept files it found to link and those of folders changed since are looked at (``_unsettled``:
    at 10,000 services a stat of 35,000 folders instead of 157,000 files). Costs what changed
    since the spare was live, where building from nothing costs a link per file and a folder
    per folder (at 10,000 services 160,000 and 35,000 system calls, then as many to delete the
    old tree). ``walked``: the folders the comparison walked (``Changes.folders``), which hold
    every kept file."""
    found = scanned or scan_spare(root, written, keep)
    have = found.have
    for rel in found.drop_folders:
        shutil.rmtree(f"{root}/{rel}")
    for rel in found.drop_files:
        os.unlink(f"{root}/{rel}")
    for folder in found.make_folders:
        os.makedirs(f"{root}/{folder}", exist_ok=True)
    for path in written:
        if path in have:
            os.unlink(f"{root}/{path}")
        _write_new(f"{root}/{path}", files[path])
    linked = []
    settled = found.relink is not None
    for path in _unsettled(base, keep, found, walked) if settled else keep:
        source = f"{base}/{path}"
        spare = have.get(path) if not settled or path in have else _inode(f"{root}/{path}")
        if spare is not None:
            if spare == os.lstat(source).st_ino:
                continue
            os.unlink(f"{root}/{path}")
        _link(source, f"{root}/{path}")
        linked.append(path)
    if MANIFEST in have:
        os.unlink(f"{root}/{MANIFEST}")
    return linked


def _unsettled(base: str, keep: list[str], scanned: SpareScan, walked: list[str] | None = None) -> list[str]:
    """The kept files the write must look at: those the scan found to link (``relink``), and
    every kept file in a folder whose identity no longer holds (or was too recent to trust): a
    file there may have been replaced since the survey, and is linked as it is now. ``walked``:
    the folders the survey walked, every kept file's among them."""
    folders = scanned.folders or {}
    changed = set()
    for folder, was in folders.items():
        try:
            now = _folder_identity(os.lstat(base if folder == "." else f"{base}/{folder}"))
        except OSError:
            now = ""
        if now != was:
            changed.add(folder)
    relink = set(scanned.relink or ())
    if walked is not None and not changed and all(map(folders.__contains__, walked)):
        # every folder as the survey saw it, and each settled: only the files found to link (at
        # 10,000 services, not each of 160,000 kept files' folder worked out and looked up)
        return [p for p in keep if p in relink]
    return [
        p for p in keep if p in relink or (folder := p.rpartition("/")[0] or ".") in changed or folder not in folders
    ]


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def _folders_of(paths: Iterable[str]) -> set[str]:
    """Every folder the ``paths`` are in ('a' and 'a/b' for 'a/b/c'). Each file's own folder,
    then each new folder's parents until one already held: at 10,000 services 160,000 files are
    in 35,000 folders, and splitting every path into all its heads took five times as long."""
    folders: set[str] = set()
    for folder in {p.rpartition("/")[0] for p in paths}:
        while folder and folder not in folders:
            folders.add(folder)
            folder = folder.rpartition("/")[0]
    return folders


def _write_new(path: str, text: str) -> None:
    with open(path, "xb") as f:  # a new file: never through a link or another tree's file
        f.write(text.encode("utf-8"))


def _link(source: str, dest: str) -> None:
    try:
        os.link(source, dest, follow_symlinks=False)  # same inode: content and modification time kept
    except OSError:
        shutil.copy2(source, dest, follow_symlinks=False)


# -- the spare: the tree a swap replaced, kept for the next run -------------------------------------


def _spare(out: Path) -> Path:
    """Where the tree a swap replaced waits for the next run: under .nexus/ beside the output
    folder (ignored by git, like the backups), on the same file system, so a rename moves it."""
    return out.parent / ".nexus" / "spare" / out.name


def _trusted_spare(out: Path) -> Path | None:
    """``out``'s spare when there is one to trust: only a real folder of this user's, in folders
    of this user's, is read or taken."""
    spare = _spare(out)
    return spare if all(_own_folder(p) for p in (spare.parent.parent, spare.parent, spare)) else None


def _spare_listed(out: Path, file: Path) -> SpareListing | None:
    """The last run's listing of what is now ``out``'s spare (``file``), when there is a spare
    ``_take_spare`` would take and the listing still holds for it; else None."""
    spare = _trusted_spare(out)
    if spare is None:
        return None
    listed = SpareListing.read(file)
    return listed if listed is not None and listed.holds(str(spare)) else None


def _scan_spare_of(
    out: Path, written: list[str], keep: list[str], live: Live, listed: SpareListing | None = None
) -> SpareScan | None:
    """``scan_spare`` of the spare ``_take_spare`` would take; None when there is none it would
    take, or it cannot be read (the write then reads it, and says what is wrong). ``listed``:
    what the last run's survey saw of the tree that is now the spare, found to hold for it
    (``_spare_listed``)."""
    spare = _trusted_spare(out)
    if spare is None:
        return None
    if listed is not None:
        found = listed.scan(written, keep, live)
        if found is not None:
            return found
    try:
        return scan_spare(str(spare), written, keep, live)
    except OSError:
        return None


def _take_spare(out: Path, staging: Path) -> bool:
    """Move the spare to ``staging``; False (nothing moved) when there is none to trust
    (``_trusted_spare``)."""
    spare = _trusted_spare(out)
    if spare is None:
        return False
    try:
        spare.rename(staging)
    except OSError:
        return False
    if _own_folder(staging):  # checked again where it now is: in the output's own parent
        return True
    _remove(staging)
    return False


def _keep_spare(out: Path, old: Path) -> bool:
    """Keep ``old`` (the tree the swap replaced) as the spare; remove it where that cannot be
    done. Whether it was kept."""
    spare = _spare(out)
    try:
        spare.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (_own_folder(spare.parent.parent) and _own_folder(spare.parent)):
            raise OSError(errno.EPERM, "not a folder of this user's", str(spare.parent))
        _remove(spare)
        old.rename(spare)
    except OSError:
        shutil.rmtree(old, ignore_errors=True)  # the next run builds from nothing (and removes any rest)
        return False
    return True


def _first_spare_folders(out: Path, paths: list[str]) -> Callable[[], bool]:
    """A first tree replaces none to keep as the spare, so one is made: its folders now, in a
    worker beside the write (parallel.beside), its files linked once the tree is in place
    (``_first_spare``). Then the first edit brings a spare up to date as every later edit
    does, instead of building a tree from nothing: at 10,000 services 35,000 folders and
    160,000 links, 6 to 12 s of the first edit (a folder cost this file system 200 to 500
    microseconds to make, a link 12), moved to the cold run and most of it off its path.
    Returns the wait for the folders: whether they were made."""
    from .parallel import beside  # multiprocessing: only a first write imports it here

    root = _spare_staging(out)

    def make() -> bool:
        try:
            _remove(root)  # a killed run's (recover() removes it too)
            os.mkdir(root, 0o755)
            for folder in sorted(_folders_of(paths)):  # parents first
                os.mkdir(f"{root}/{folder}")
        except OSError:
            return False  # no spare: the first edit builds its tree from nothing
        return True

    return beside(make, worth=len(paths) >= COMPARE_AHEAD_FROM)


def _first_spare(out: Path, paths: list[str], folders_made: Callable[[], bool] | None, *, wanted: bool = True) -> bool:
    """Link the new tree's ``paths`` into the folders ``_first_spare_folders`` made and keep
    it as the spare; not ``wanted`` (the write failed), remove them. Before the record: a link
    sets each file's change time, and the record must hold the identity it leaves. A file
    system without hard links gets no spare (copies would double the tree). Whether a spare
    was kept."""
    if folders_made is None:
        return False
    root = _spare_staging(out)
    made = folders_made()  # waited for even when not wanted: the worker must be done making them
    if made and wanted:
        try:
            for path in paths:
                os.link(f"{out}/{path}", f"{root}/{path}", follow_symlinks=False)
        except OSError:
            pass
        else:
            return _keep_spare(out, root)
    shutil.rmtree(root, ignore_errors=True)
    return False


def _own_folder(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


# -- messages --------------------------------------------------------------------------------------

_FIXES = {
    errno.ENOSPC: "the disk is full: free some space and run again",
    errno.EDQUOT: "the disk quota is used up: free some space and run again",
    errno.EFBIG: "a file is larger than this process may write (ulimit -f): raise the limit and run again",
    errno.EACCES: "permission denied: run as a user who may write there, or change the folder's permissions",
    errno.EPERM: "check who owns the folder and its parent (a sticky folder lets only owners rename) and lsattr",
    errno.EROFS: "the file system is read-only",
    errno.ENAMETOOLONG: "a file name is longer than the file system allows",
}


def fix_for(exc: OSError) -> str:
    """What to do about ``exc``, in a few words."""
    return _FIXES.get(exc.errno or 0, "fix that and run again")


def explain(exc: OSError, out: Path, doing: str) -> str:
    """One line: what failed, where, that the old tree is intact, and the fix."""
    where = f" ({exc.filename})" if exc.filename else ""
    fix = fix_for(exc)
    intact = (
        "nothing was changed" if doing in ("read", "lock") else f"{out.name}/ is unchanged and no partial copy was left"
    )
    return f"cannot {doing} {out}: {exc.strerror or exc}{where}; {intact}; {fix}"
