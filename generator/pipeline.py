"""`generate()`: the whole pipeline, in order. The CLI only parses arguments and calls this."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import pydantic
import yaml

from . import usercache, write
from .catalog import Loaded, load_catalog
from .checks import check
from .errors import DriftError, HandEditedError
from .render import RenderContext, render
from .render.context import TEMPLATES
from .render.services import team_files, team_owned


@dataclass
class Result:
    loaded: Loaded
    out: Path
    files: dict[str, str]
    changes: write.Changes
    touched: list[str]  # written or removed; empty for --check and for a run with nothing to do
    count: int  # files in the generated tree
    backup: Path | None = None  # where --force copied the files it overwrote


def generate(
    catalog: str | Path = "catalog.yaml",
    out: str | Path | None = None,
    *,
    check_only: bool = False,
    force: bool = False,
    strict: bool = False,
    lock_timeout: float = 300.0,
    waiting: Callable[[str], None] | None = None,
) -> Result:
    """Load, validate, plan, render, check, then write (or, with ``check_only``, compare).

    One run at a time per output folder: while another holds it, wait (``waiting`` is told who)
    up to ``lock_timeout`` seconds. Raises CatalogError, TemplateError or OutputCheckError before
    anything is written; DriftError when ``check_only`` finds a difference; HandEditedError when
    a generated file was edited by hand and ``force`` is not set; OutputError when the output
    folder cannot be written (nothing changed then).
    """
    loaded = load_catalog(catalog)  # load + validate
    # absolute and normalized: the lock and staging paths are named after the folder's own name
    target = Path(os.path.abspath(out)) if out is not None else loaded.root / "generated"
    write.refuse_link(target)
    with write.locked(target, timeout=lock_timeout, waiting=waiting, required=not check_only):
        if not check_only:
            write.recover(target)  # what a killed run left beside the tree
        return _run(loaded, target, check_only=check_only, force=force, strict=strict)


def _run(loaded: Loaded, target: Path, *, check_only: bool, force: bool, strict: bool) -> Result:
    code = _code_key()
    inputs = _inputs_key(code, loaded, target)
    record_file = _record_file(target)
    record = _read_record(record_file) if record_file is not None and not strict else None
    if record is not None and record["inputs"] == inputs and write.matches(target, record["tree"]):
        # The record (in the user's cache, out of a pull request's reach) says these inputs render
        # exactly the files this tree holds, hashed again just now: rendering would give the same bytes.
        return Result(loaded, target, {}, write.Changes(), [], record["count"])
    ctx = RenderContext(loaded.catalog, loaded.plan, cache=True)  # plan
    files = render(ctx)  # render
    changes = write.compare(target, files, team_owned)  # read-only: what differs from the tree on disk
    # files whose exact bytes passed the checks in an earlier run (by our record, not the tree's manifest)
    passed = record["tree"] if record is not None and record["code"] == code else {}
    verified = frozenset(
        p for p, text in files.items() if (h := passed.get(p)) and h == write.sha256(text.encode("utf-8"))
    )
    check(ctx, files, strict=strict, verified=verified, cache=True)  # check, before any write
    backup = None
    if check_only:
        if not changes.clean:
            raise DriftError(changes.report())
        touched: list[str] = []
    else:
        if changes.refused and not force:
            raise HandEditedError(changes.refused, _team_files_of(changes.refused))
        applied = write.apply(target, files, changes, force=force)  # write
        touched, backup = applied.touched, applied.backup
    if record_file is not None:
        tree = write.expected(files, changes, team_owned)
        payload = {"version": 1, "inputs": inputs, "code": code, "count": len(files), "tree": tree}
        usercache.write(record_file, json.dumps(payload, sort_keys=True).encode())
    return Result(loaded, target, files, changes, touched, len(files), backup)


def _team_files_of(paths: list[str]) -> list[str]:
    """The team-owned files of the services whose generated files were edited."""
    services = sorted({parts[1] for p in paths if len(parts := p.split("/")) > 2 and parts[0] == "services"})
    return [f"services/{name}/{f}" for name in services for f in team_files(name)]


def _code_key() -> str:
    """A hash of what turns a catalog into files: every template, our own code, the libraries
    that shape the output and the interpreter."""
    digest = hashlib.blake2b(
        f"{sys.version}|{jinja2.__version__}|{yaml.__version__}|{pydantic.VERSION}".encode(), digest_size=16
    )
    code = Path(__file__).resolve().parent
    for folder in (TEMPLATES, code):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _inputs_key(code: str, loaded: Loaded, target: Path) -> str:
    """A hash of everything the output depends on: the code, the catalog, where it is written."""
    digest = hashlib.blake2b(f"{code}|{target.resolve()}|".encode(), digest_size=16)
    digest.update(loaded.source.text.encode("utf-8"))
    return digest.hexdigest()


def _record_file(target: Path) -> Path | None:
    """Where the record of ``target``'s last clean state is kept: the user's cache folder, one
    file per output folder (by its resolved path). None when there is no usable cache folder."""
    folder = usercache.folder("generate")
    if folder is None:
        return None
    return folder / hashlib.blake2b(str(target.resolve()).encode(), digest_size=16).hexdigest()


def _read_record(path: Path) -> dict[str, Any] | None:
    payload = usercache.read(path)
    if payload is None:
        return None
    try:
        record: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("version") != 1 or not isinstance(record.get("tree"), dict):
        return None
    if not all(isinstance(record.get(k), t) for k, t in (("inputs", str), ("code", str), ("count", int))):
        return None
    return record
