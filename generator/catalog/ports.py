"""Port rules that need the whole catalog: which ports are taken and which one a new service
gets. `nexus new` and the service-template docs page both ask here, so they always agree."""

from __future__ import annotations

from .models import Catalog


def used_ports(cat: Catalog) -> set[int]:
    # infrastructure ports too: `nexus up` runs everything on one host
    return {s.port for s in cat.services.values()} | {c.port for c in cat.infrastructure.values()}


def next_port(cat: Catalog, category: str) -> int | None:
    """The lowest free port in the category's block (None when the block is full); without a
    block, the first free port above the category's highest (above the catalog's highest for
    a category with no services yet, or an unknown one: validation then names the category)."""
    used = used_ports(cat)
    known = cat.categories.get(category)
    if known is not None and known.ports is not None:
        return next((p for p in range(known.ports.first, known.ports.last + 1) if p not in used), None)
    mine = [s.port for s in cat.services.values() if s.category == category]
    port = max(mine or [s.port for s in cat.services.values()] or [8000]) + 1
    while port in used:
        port += 1
    return port if port <= 65535 else None
