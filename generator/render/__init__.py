"""Render stage: a validated catalog -> ``{relative path: text}``. Pure: no I/O beyond reading
templates, and no checks (those read the result: nexus.checks).

Each area of the output is one module with a ``render(ctx)`` returning its files; AREAS lists
them in the order their files are reported. Two areas may never render the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .. import parallel
from ..errors import TemplateError
from . import docs, ecosystem, events, k8s, mesh, services
from .context import RenderContext

Area = Callable[[RenderContext], dict[str, str]]

AREAS: tuple[Area, ...] = (services.render, k8s.render, docs.render, ecosystem.render, mesh.render, events.render)
# On a large catalog the areas are shared between this process and a worker (parallel.shared),
# each taking the next area in this order, the longest first: after an edit the docs take
# longest, in a cold run the services and their manifests.
LONGEST_FIRST: tuple[Area, ...] = (
    services.render,
    docs.render,
    k8s.render,
    mesh.render,
    ecosystem.render,
    events.render,
)
PARALLEL_FROM = 1_000  # services: below this, forking costs more than it saves

__all__ = ["AREAS", "RenderContext", "render"]


def render(ctx: RenderContext, meanwhile: Callable[[], object] | None = None) -> dict[str, str]:
    """Every generated file, keyed by its path under generated/. The same files, and the same
    first error, whichever process renders an area: areas are merged in AREAS' order, and
    their errors raised in LONGEST_FIRST's, the order they are taken in (in turn as well).
    ``ctx.digests`` gets the SHA-256 the render caches know of them. ``meanwhile``: the
    caller's own work for this process once it has no area left to take, while the worker
    finishes (parallel.shared); after the areas when they render in turn."""
    worth = len(ctx.catalog.services) >= PARALLEL_FROM
    if worth:
        # the neighbourhoods, which areas on both sides read, worked out once before the fork
        # (at 10,000 services 0.15 s, which the worker otherwise spent again)
        ctx.hood(next(iter(ctx.catalog.services)))
    rendered = parallel.shared([partial(_area, ctx, area) for area in LONGEST_FIRST], worth=worth, meanwhile=meanwhile)
    done = dict(zip(LONGEST_FIRST, rendered, strict=True))
    # Merged area by area and sorted by path alone, in C: at 10,000 services a lookup and an
    # insert per file, then sorting 160,000 (path, text) pairs, took 0.3 s of every edit; this 0.1
    out: dict[str, str] = {}
    for area in AREAS:
        files, digests = done[area]
        if not out.keys().isdisjoint(files):
            raise TemplateError(f"two areas render the same file {min(out.keys() & files.keys())}")
        out.update(files)
        ctx.digests.update(digests)
    return {path: out[path] for path in sorted(out)}


def _area(ctx: RenderContext, area: Area) -> tuple[dict[str, str], dict[str, str]]:
    """An area's files and the SHA-256 its caches know of them (asked where it rendered: a
    worker's texts come back as new objects)."""
    files = area(ctx)
    return files, ctx.known_digests(files)
