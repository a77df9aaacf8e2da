"""The render stage as a whole: areas rendered in a worker beside this process give the same
files, and the same first error, as rendering them in turn."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from conftest import CATALOG

from nexus import parallel
from nexus import render as render_stage
from nexus.catalog import load_catalog
from nexus.errors import TemplateError
from nexus.render import RenderContext, render


@pytest.fixture
def in_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every catalog counts as large, on a machine of two cores: BESIDE renders in a fork."""
    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 1)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)


def _ctx() -> RenderContext:
    loaded = load_catalog(CATALOG)
    return RenderContext(loaded.catalog, loaded.plan)


def _failing(message: str) -> Any:
    def area(ctx: RenderContext) -> dict[str, str]:
        raise TemplateError(message)

    return area


def test_areas_rendered_beside_give_the_same_files(in_a_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    parallel_files = render(_ctx())
    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 10**9)
    serial_files = render(_ctx())
    assert list(parallel_files) == list(serial_files) and parallel_files == serial_files

    # and the areas beside really ran in another process: one says which, in a file of its own
    inside = render_stage.BESIDE[0]

    def noting(ctx: RenderContext) -> dict[str, str]:
        return {**inside(ctx), "rendered-by": str(os.getpid())}

    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 1)
    monkeypatch.setattr(render_stage, "AREAS", tuple(noting if a is inside else a for a in render_stage.AREAS))
    monkeypatch.setattr(render_stage, "BESIDE", (noting, *render_stage.BESIDE[1:]))
    files = render(_ctx())
    assert files.pop("rendered-by") != str(os.getpid())
    assert files == serial_files


def test_an_error_in_an_area_beside_is_raised_here(in_a_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = _failing("templates/docs/README.md.j2:3: 'x' is undefined")
    monkeypatch.setattr(render_stage, "AREAS", (*render_stage.AREAS, broken))
    monkeypatch.setattr(render_stage, "BESIDE", (*render_stage.BESIDE, broken))
    with pytest.raises(TemplateError, match=re.escape("README.md.j2:3: 'x' is undefined")):
        render(_ctx())


def test_the_first_area_in_order_names_the_error(in_a_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both processes fail: the area first in AREAS (here, rendered in this process) is the one
    reported, as in turn; the worker is waited for all the same."""
    first, later = _failing("first"), _failing("later")
    monkeypatch.setattr(render_stage, "AREAS", (first, *render_stage.AREAS, later))
    monkeypatch.setattr(render_stage, "BESIDE", (*render_stage.BESIDE, later))
    with pytest.raises(TemplateError, match=r"^first$"):
        render(_ctx())
