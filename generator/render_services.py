"""Render area: services. (Being built.)"""

from __future__ import annotations

from .render import RenderContext


def render(ctx: RenderContext) -> dict[str, str]:
    return {}


def checks(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    """Pre-write checks for this area: one line per failure, naming the service and the file."""
    return []
