"""Port rules that need the whole catalog: which ports are taken, by whom, and which one a new
service gets. Validation, `nexus new` and the service-template docs page all ask here, so they
always agree.

Services and infrastructure share one space of ports: `nexus up` runs the services on one
host beside the infrastructure, and a port is how a caller is pointed at either.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Catalog

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Claim:
    port: int
    path: Path_  # where the catalog sets it
    owner: str  # in words, for a message


def claims(cat: Catalog) -> list[Claim]:
    """Every port the catalog sets: infrastructure first (it predates the services that use
    it), then services, each group by port and name, so a clash is reported at the later one."""
    infra = [
        Claim(c.port, ("infrastructure", n, "port"), f"infrastructure '{n}'") for n, c in cat.infrastructure.items()
    ]
    services = [Claim(s.port, ("services", n, "port"), f"'{n}'") for n, s in cat.services.items()]
    return sorted(infra, key=lambda c: (c.port, c.path)) + sorted(services, key=lambda c: (c.port, c.path))


def clashes(cat: Catalog) -> list[tuple[Claim, Claim]]:
    """(first, later) for each port set twice."""
    first: dict[int, Claim] = {}
    out = []
    for claim in claims(cat):
        if claim.port in first:
            out.append((first[claim.port], claim))
        else:
            first[claim.port] = claim
    return out


def used_ports(cat: Catalog) -> set[int]:
    return {c.port for c in claims(cat)}


def next_free(port: int, used: set[int]) -> int | None:
    """The first port from ``port`` up that nothing uses (None past 65535)."""
    while port in used:
        port += 1
    return port if port <= 65535 else None


def next_port(cat: Catalog, category: str) -> int | None:
    """The lowest free port in the category's block (None when the block is full); without a
    block, the first free port above the category's highest (above the catalog's highest for
    a category with no services yet, or an unknown one: validation then names the category)."""
    used = used_ports(cat)
    known = cat.categories.get(category)
    if known is not None and known.ports is not None:
        return next((p for p in range(known.ports.first, known.ports.last + 1) if p not in used), None)
    mine = [s.port for s in cat.services.values() if s.category == category]
    return next_free(max(mine or [s.port for s in cat.services.values()] or [8000]) + 1, used)
