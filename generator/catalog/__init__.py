"""The library entry for reading a catalog: load, then validate. Everything else starts here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .. import collector
from ..paths import catalog_folder
from .load import Source, load_file, load_text
from .models import Catalog
from .plan import Plan, plan
from .validate import validate


@dataclass
class Loaded:
    """A validated catalog together with its source (for positions) and its deployment plan."""

    catalog: Catalog
    source: Source

    @cached_property
    def plan(self) -> Plan:
        return plan(self.catalog)

    @property
    def root(self) -> Path:
        """The folder the catalog lives in: `generated/` and `templates/` are found beside it."""
        return catalog_folder(self.source.file)


def load_catalog(path: str | Path = "catalog.yaml", raw: bytes | None = None, *, space: str | None = None) -> Loaded:
    """Read, parse and validate a catalog file (``raw``: its bytes, read already). Raises
    CatalogError with every problem. ``space``: see ``load.load_text``."""
    with collector.paused():  # what loading builds lives on (collector.paused)
        src = load_file(path, raw, space=space)
        return Loaded(validate(src), src)


def load_catalog_text(text: str, file: str = "catalog.yaml", *, space: str | None = None) -> Loaded:
    """``load_catalog`` of a catalog's text. ``space``: see ``load.load_text``."""
    with collector.paused():
        src = load_text(text, file, space=space)
        return Loaded(validate(src), src)
