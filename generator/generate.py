"""`generate()`: the whole pipeline, in order. The CLI only parses arguments and calls this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import write
from .catalog import Loaded, load_catalog
from .check import check
from .errors import DriftError
from .render import RenderContext, render


@dataclass
class Result:
    loaded: Loaded
    out: Path
    files: dict[str, str]
    changes: write.Changes
    touched: list[str]  # written or removed; empty for --check and for a run with nothing to do


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
    ctx = RenderContext(loaded.catalog, loaded.plan, cache=cache / "jinja")  # plan
    files = render(ctx)  # render
    target = Path(out) if out is not None else loaded.root / "generated"
    changes = write.diff(target, files)  # read-only: what differs from the tree on disk
    check(ctx, files, strict=strict, verified=changes.verified, cache=cache)  # check, before any write
    if check_only:
        if not changes.clean:
            raise DriftError(changes.report())
        return Result(loaded, target, files, changes, [])
    touched = write.apply(target, files, changes, force=force)  # write
    return Result(loaded, target, files, changes, touched)
