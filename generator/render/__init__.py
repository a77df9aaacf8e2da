"""Render stage: a validated catalog -> ``{relative path: text}``. Pure: no I/O beyond reading
templates, and no checks (those read the result: nexus.checks).

Each area of the output is one module with a ``render(ctx)`` returning its files; AREAS lists
them in the order their files are reported. Two areas may never render the same path.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import TemplateError
from . import docs, ecosystem, events, k8s, mesh, services
from .context import RenderContext

Area = Callable[[RenderContext], dict[str, str]]

AREAS: tuple[Area, ...] = (services.render, k8s.render, docs.render, ecosystem.render, mesh.render, events.render)

__all__ = ["AREAS", "RenderContext", "render"]


def render(ctx: RenderContext) -> dict[str, str]:
    """Every generated file, keyed by its path under generated/."""
    out: dict[str, str] = {}
    for area in AREAS:
        for path, text in area(ctx).items():
            if path in out:
                raise TemplateError(f"two areas render the same file {path}")
            out[path] = text
    return dict(sorted(out.items()))
