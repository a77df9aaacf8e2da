"""`generate()`: the whole pipeline, in order. The CLI only parses arguments and calls this."""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import collector, usercache, write
from .digest import of_files
from .errors import DriftError, HandEditedError, OutputError
from .paths import code_key, open_catalog, output_folder
from .timings import Timings

if TYPE_CHECKING:
    from .catalog import Loaded


@dataclass
class Result:
    loaded: Loaded | None  # None when there was nothing to do: the catalog was not even loaded
    out: Path
    files: dict[str, str]
    changes: write.Changes
    touched: list[str]  # written or removed; empty for --check and for a run with nothing to do
    count: int  # files in the generated tree
    backup: Path | None = None  # where --force copied the files it overwrote
    # What else the run built (its render context and caches, the record it read and wrote),
    # held for as long as the result is: freeing 10,000 services' worth object by object when
    # the run returned took 0.24 s of an edit, which the CLI, ending at once (cli._end_now),
    # never pays; a library caller frees it with the result.
    held: tuple[Any, ...] = field(default=(), repr=False, compare=False)


def generate(
    catalog: str | Path = "catalog.yaml",
    out: str | Path | None = None,
    *,
    check_only: bool = False,
    force: bool = False,
    strict: bool = False,
    lock_timeout: float = 300.0,
    waiting: Callable[[str], None] | None = None,
    timings: Timings | None = None,
    validated: tuple[bytes, Loaded] | None = None,
) -> Result:
    """Load, validate, plan, render, check, then write (or, with ``check_only``, compare).

    One run at a time per output folder: while another holds it, wait (``waiting`` is told who)
    up to ``lock_timeout`` seconds. Raises CatalogError, TemplateError or OutputCheckError before
    anything is written; DriftError when ``check_only`` finds a difference; HandEditedError when
    a generated file was edited by hand and ``force`` is not set; OutputError when the output
    folder cannot be written (nothing changed then). ``timings`` gets each stage's times, as far
    as the run got (`nexus generate --timings`). ``validated``: the catalog file's bytes and
    what the caller loaded and validated from them (`nexus new`'s candidate), taken instead of
    loading the file again while it holds those very bytes (at 10,000 services 0.34 s).
    """
    clock = timings if timings is not None else Timings()
    with clock.whole(), collector.paused(), ExitStack() as run:
        target = output_folder(catalog, out)
        write.refuse_holding(target, catalog)
        last = clock.call("read the last run's record", _Last.of, catalog, target, strict)
        comparing = _compare_ahead(run, target, last) if not check_only else None
        # A catalog unchanged since a clean run was valid then and is now: only a changed one is loaded
        # up front (its errors come before anything else), and a run with nothing to do never loads it.
        loaded = None if last.same_inputs else _load(catalog, clock, last, validated)  # load + validate
        if comparing is None:
            write.refuse_link(target)
            run.enter_context(write.locked(target, timeout=lock_timeout, waiting=waiting, required=not check_only))
            if _catalog_bytes(catalog) != last.text:
                # the catalog changed while this run waited for the lock (`nexus new`, an editor's save):
                # what it holds now is rendered, never an older text after the run that rendered a newer one
                last = _Last.of(catalog, target, strict)
                loaded = None if last.same_inputs else _load(catalog, clock, last, validated)
            if not check_only:
                write.recover(target)  # what a killed run left beside the tree
            if (
                last.record is not None
                and last.same_inputs
                and clock.call(
                    "compare the tree with the record", write.matches, target, last.record["tree"], last.known
                )
            ):
                # The record (in the user's cache, out of a pull request's reach) says these inputs render
                # exactly the files this tree holds, hashed again just now: rendering would give the same bytes.
                return Result(None, target, {}, write.Changes(), [], last.record["count"])
        return _run(
            loaded or _load(catalog, clock, last, validated),
            target,
            last,
            clock,
            comparing,
            run,
            check_only=check_only,
            force=force,
            strict=strict,
        )


def _compare_ahead(run: ExitStack, target: Path, last: _Last) -> write.Comparison | None:
    """For a large tree whose catalog changed, the comparison with the tree begun at once, on
    the core that loading and rendering leave (write.Comparison), under the output's lock taken
    now. Only when that lock is free at once and the folder can be used: otherwise (and for a
    small tree) the run goes in turn, and a catalog error still comes before any wait or any
    complaint about the folder."""
    if last.same_inputs or last.record is None or last.record["count"] < write.COMPARE_AHEAD_FROM:
        return None
    early = ExitStack()
    try:
        write.refuse_link(target)
        early.enter_context(write.locked(target, timeout=0))
        write.recover(target)
    except OutputError:
        early.close()
        return None
    run.enter_context(early)
    comparing = write.Comparison(target, _team_owned, last.known, worth=True, writing=True, listing=last.listing)
    # a run stopped by an error ends the worker with it; one that went on waits for it while it
    # lists the tree for the next run (Comparison's ``later``)
    run.callback(comparing.close)
    return comparing


def _team_owned(path: str) -> bool:
    """``render.services.team_owned``, its module imported when a file's owner is first asked:
    the comparison's early worker is forked before anything else loads, and importing the
    renderers first (0.2 s at any size) held back the start of its survey, which ends on an
    edit's path, where the record answers whose each file is (write._survey)."""
    from .render.services import team_owned

    return team_owned(path)


def _load(catalog: str | Path, clock: Timings, last: _Last, validated: tuple[bytes, Loaded] | None = None) -> Loaded:
    with clock("load and validate the catalog"):
        if validated is not None and last.text is not None and validated[0] == last.text:
            return validated[1]  # the very bytes this run hashed (``last.text``): the same catalog
        from .catalog import load_catalog  # the models (pydantic) load only when a catalog is read

        return load_catalog(catalog, last.text, space=last.space)


def _run(
    loaded: Loaded,
    target: Path,
    last: _Last,
    clock: Timings,
    comparing: write.Comparison | None,
    run: ExitStack,
    *,
    check_only: bool,
    force: bool,
    strict: bool,
) -> Result:
    # Rendering and checking load Jinja, the templates and the schemas: only a run that renders pays.
    with clock("import the renderers and checks"):
        from .checks import Prepared, check
        from .render import RenderContext, render
        from .render.services import team_owned

    ctx = RenderContext(loaded.catalog, loaded.plan, cache=True, hoods=not strict, space=usercache.name_of(target))
    # what the checks keep between runs is read while the render's worker finishes
    prepared = Prepared(ctx.space, strict=strict, cache=True)
    files = clock.call("render", render, ctx, prepared.load)
    hashed = clock.call("hash the rendered files", of_files, files, ctx.digests)
    known = last.known
    # read-only: what differs from the tree on disk; on a large tree in a worker, beside the checks
    if comparing is None:
        comparing = write.Comparison(
            target,
            team_owned,
            known,
            worth=len(files) >= write.COMPARE_AHEAD_FROM,
            writing=not check_only,
            listing=last.listing,
        )
        # ended with the run: waited for while it lists the tree for the next run (``later``)
        run.callback(comparing.close)
    comparing.of(hashed)
    # files whose exact bytes passed the checks in an earlier run (by our record, not the tree's manifest)
    record = last.record if last.record is not None and last.record["code"] == last.code else {}
    passed, teams = record.get("tree", {}), record.get("teams", {})
    verified = frozenset(p for p, h in hashed.items() if h == passed.get(p) or h == teams.get(p))
    with clock("check, and compare with the tree"):
        try:
            # before any write
            check(ctx, files, strict=strict, verified=verified, cache=True, digests=hashed, prepared=prepared)
        except BaseException:
            comparing.changes()  # a folder that cannot be read is said first, as when compared before the checks
            raise
        changes = comparing.changes()
    backup = None
    if check_only:
        if not changes.clean:
            raise DriftError(changes.report(), target)
        touched: list[str] = []
        linked: list[str] = []
        swapped: write.Stamp | None = None
    else:
        write.refuse_unowned(target, changes)  # before the refusal that --force lifts: it does not lift this
        if changes.refused and not force:
            raise HandEditedError(changes.refused, _team_files_of(changes.refused), changes.extra)
        applied = clock.call("write", write.apply, target, files, changes, force=force, listing=last.listing)
        touched, backup, linked, swapped = applied.touched, applied.backup, applied.linked, applied.stamp
    payload: dict[str, Any] | None = None
    if last.file is not None and last.inputs is not None:
        with clock("record this run"):
            tree = write.expected(files, changes)
            # after the write: what the next run need not read again
            seen = known.taken(target, tree, touched, linked, swapped)
            payload = {
                "version": 3,
                "inputs": last.inputs,
                "code": last.code,
                "count": len(files),
                "tree": tree,
                "seen": seen,
                # the teams' files as rendered (the tree names them by presence): they passed the
                # checks too, and are not checked again while rendered the same (at 10,000
                # services 27,700 files, every one of which each run checked again)
                "teams": {p: h for p, h in changes.rendered.items() if p in changes.team},
            }
            # marshal, not JSON: at 10,000 services the record holds 300,000 hashes and identities, and
            # every run reads it (the no-op too); marshal reads them several times faster and runs no code.
            # Written over the last one in place (a run that reads it meanwhile, before it waits for
            # this run's lock, finds it torn: no record, a slower run)
            usercache.rewrite(last.file, marshal.dumps(payload))
    return Result(loaded, target, files, changes, touched, len(files), backup, held=(ctx, verified, last, payload))


def _team_files_of(paths: list[str]) -> list[str]:
    """The team-owned files of the services whose generated files were edited."""
    from .render.services import team_files

    services = sorted({parts[1] for p in paths if len(parts := p.split("/")) > 2 and parts[0] == "services"})
    return [f"services/{name}/{f}" for name in services for f in team_files(name)]


@dataclass
class _Last:
    """This output folder's last clean run, as the user's cache recorded it, beside this run's keys."""

    file: Path | None  # where the record is kept; None without a usable cache folder
    record: dict[str, Any] | None  # None when there is none (or --strict, which trusts no record)
    code: str  # paths.code_key() now
    inputs: str | None  # the hash of this run's inputs; None when the catalog cannot be read
    # the catalog's bytes as hashed in ``inputs``: what the run loads (a file edited meanwhile
    # is the next run's input, never rendered under this one's hash)
    text: bytes | None = None
    # beside the record: the tree as this run finds it, the next run's spare (write.SpareListing);
    # None with --strict, which walks the spare
    listing: Path | None = None
    # the user cache's space of this output folder (usercache.Shards), for the catalog's parts
    # (catalog.load_catalog); None without a usable cache folder, and with --strict, which reads
    # the catalog whole
    space: str | None = None

    @classmethod
    def of(cls, catalog: str | Path, target: Path, strict: bool) -> _Last:
        folder = usercache.folder("generate")
        # one record per output folder, by its resolved path
        file = folder / usercache.name_of(target) if folder is not None else None
        record = _read_record(file) if file is not None and not strict else None
        code = code_key()
        text = _catalog_bytes(catalog)
        # everything the output depends on: the code, the catalog, where it is written
        where = os.fsencode(target.resolve())  # as the file system spells it, UTF-8 or not
        inputs = _digest(f"{code}|".encode() + where + b"|" + text) if text is not None else None
        listing = file.with_name(f"{file.name}.spare") if file is not None and not strict else None
        space = file.name if file is not None and not strict else None
        return cls(file, record, code, inputs, text, listing, space)

    @cached_property
    def known(self) -> write.Known:
        """The recorded tree's hashes, trusted for files whose identity has not changed since
        (one for the run: the comparison keeps in it what it found unchanged)."""
        if self.record is None:
            return write.Known()
        return write.Known(self.record["tree"], self.record["seen"], teams=self.record["code"] == self.code)

    @property
    def same_inputs(self) -> bool:
        return self.record is not None and self.inputs is not None and self.record["inputs"] == self.inputs


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _catalog_bytes(catalog: str | Path) -> bytes | None:
    """The catalog file's bytes; None for anything but a readable regular file (a pipe's bytes
    are read once, by the load; a device never ends): loading it then says what is wrong."""
    try:
        with os.fdopen(open_catalog(catalog), "rb") as f:
            return f.read() if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else None
    except OSError:
        return None


def _read_record(path: Path) -> dict[str, Any] | None:
    payload = usercache.read(path)
    if payload is None:
        return None
    try:
        record: Any = marshal.loads(payload)
    except (EOFError, ValueError, TypeError):
        return None
    if not isinstance(record, dict) or record.get("version") != 3:
        return None
    if not isinstance(record.get("tree"), dict) or not isinstance(record.get("seen"), dict):
        return None
    if not isinstance(record.get("teams", {}), dict):  # a record from before them has none
        return None
    if not all(isinstance(record.get(k), t) for k, t in (("inputs", str), ("code", str), ("count", int))):
        return None
    return record
