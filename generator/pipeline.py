"""`generate()`: the whole pipeline, in order. The CLI only parses arguments and calls this."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import write
from .catalog import Loaded, load_catalog
from .checks import check
from .errors import DriftError
from .render import RenderContext, render
from .render.context import TEMPLATES
from .render.services import team_owned


@dataclass
class Result:
    loaded: Loaded
    out: Path
    files: dict[str, str]
    changes: write.Changes
    touched: list[str]  # written or removed; empty for --check and for a run with nothing to do
    count: int  # files in the generated tree


def generate(
    catalog: str | Path = "catalog.yaml",
    out: str | Path | None = None,
    *,
    check_only: bool = False,
    force: bool = False,
    strict: bool = False,
) -> Result:
    """Load, validate, plan, render, check, then write (or, with ``check_only``, compare).

    Raises CatalogError, TemplateError or OutputCheckError before anything is written;
    DriftError when ``check_only`` finds a difference; HandEditedError when a generated file
    was edited by hand and ``force`` is not set.
    """
    loaded = load_catalog(catalog)  # load + validate
    cache = loaded.root / ".nexus" / "cache"  # compiled templates and validated hashes; safe to delete
    target = Path(out) if out is not None else loaded.root / "generated"
    key = None if strict else _inputs_key(loaded, target)
    if key is not None and _last_key(cache, target) == key and (count := write.untouched(target, team_owned)) is not None:
        # same catalog, templates and code as the last run that wrote or checked this tree, and the
        # tree untouched since: rendering again would give the same bytes
        return Result(loaded, target, {}, write.Changes(), [], count)
    ctx = RenderContext(loaded.catalog, loaded.plan, cache=cache / "jinja")  # plan
    files = render(ctx)  # render
    changes = write.compare(target, files, team_owned)  # read-only: what differs from the tree on disk
    check(ctx, files, strict=strict, verified=changes.verified, cache=cache)  # check, before any write
    if check_only:
        if not changes.clean:
            raise DriftError(changes.report())
        touched: list[str] = []
    else:
        touched = write.apply(target, files, changes, force=force)  # write
    if key is not None:
        _remember_key(cache, target, key)
    return Result(loaded, target, files, changes, touched, len(files))


def _inputs_key(loaded: Loaded, target: Path) -> str:
    """A hash of everything the output depends on: the catalog, every template, our own code."""
    digest = hashlib.blake2b(str(target.resolve()).encode(), digest_size=16)
    digest.update(loaded.source.text.encode("utf-8"))
    code = Path(__file__).resolve().parent
    for folder in (TEMPLATES, code):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _key_file(cache: Path, target: Path) -> Path:
    return cache / "inputs" / hashlib.blake2b(str(target.resolve()).encode(), digest_size=8).hexdigest()


def _last_key(cache: Path, target: Path) -> str | None:
    try:
        return _key_file(cache, target).read_text(encoding="utf-8")
    except OSError:
        return None


def _remember_key(cache: Path, target: Path, key: str) -> None:
    path = _key_file(cache, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key, encoding="utf-8")
