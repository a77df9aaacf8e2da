"""mkdocs hook: a page in docs/ that mkdocs.yml's nav does not list is appended to the nav,
not left out, so a page added by other work (running.md, deploy.md) shows without a nav edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _listed(nav: Any) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_listed(item) for item in nav)) if nav else set()
    if isinstance(nav, dict):
        return _listed(list(nav.values()))
    return set()


def on_config(config: Any) -> Any:
    nav = config["nav"]
    if nav is None:
        return config
    docs = Path(config["docs_dir"])
    listed = _listed(nav)
    extra = sorted(
        p.relative_to(docs).as_posix() for p in docs.rglob("*.md") if p.relative_to(docs).as_posix() not in listed
    )
    nav.extend(extra)
    return config
