"""Render stage: a validated catalog -> ``{relative path: text}``. Pure: no I/O beyond reading
templates, and no checks (those read the result: nexus.checks).

Each area of the output is one module with a ``render(ctx)`` returning its files; AREAS lists
them in the order their files are reported. Two areas may never render the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from ..errors import TemplateError
from ..parallel import beside
from . import docs, ecosystem, events, k8s, mesh, services
from .context import RenderContext

Area = Callable[[RenderContext], dict[str, str]]

AREAS: tuple[Area, ...] = (services.render, k8s.render, docs.render, ecosystem.render, mesh.render, events.render)
# On a large catalog these render in a worker (parallel.beside) while this process renders the
# others: at 10,000 services the services and their manifests take about as long as the rest.
BESIDE: tuple[Area, ...] = (docs.render, ecosystem.render, mesh.render, events.render)
PARALLEL_FROM = 1_000  # services: below this, forking costs more than it saves

__all__ = ["AREAS", "RenderContext", "render"]


def render(ctx: RenderContext) -> dict[str, str]:
    """Every generated file, keyed by its path under generated/. The same files, and the same
    first error, whichever process renders an area: areas are merged (and their errors
    raised) in AREAS' order. ``ctx.digests`` gets the SHA-256 the render caches know of them."""
    there = [area for area in AREAS if area in BESIDE]
    worth = len(ctx.catalog.services) >= PARALLEL_FROM
    if worth:
        # the neighbourhoods, which areas on both sides read, worked out once before the fork
        # (at 10,000 services 0.15 s, which the worker otherwise spent again)
        ctx.hood(next(iter(ctx.catalog.services)))
    others = beside(lambda: [_area(ctx, area) for area in there], worth=worth)
    try:
        done = {area: _area(ctx, area) for area in AREAS if area not in BESIDE}
    except BaseException:
        with suppress(Exception):  # waited for, so no worker outlives the run; the error before it is the one
            others()
        raise
    done.update(zip(there, others(), strict=True))
    out: dict[str, str] = {}
    for area in AREAS:
        files, digests = done[area]
        for path, text in files.items():
            if path in out:
                raise TemplateError(f"two areas render the same file {path}")
            out[path] = text
        ctx.digests.update(digests)
    return dict(sorted(out.items()))


def _area(ctx: RenderContext, area: Area) -> tuple[dict[str, str], dict[str, str]]:
    """An area's files and the SHA-256 its caches know of them (asked where it rendered: a
    worker's texts come back as new objects)."""
    files = area(ctx)
    return files, ctx.known_digests(files)
