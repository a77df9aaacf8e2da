"""Nexus: one catalog in, a whole platform out.

The library, in pipeline order (the `nexus` command, nexus.cli, is a thin layer over it)::

    from nexus import generate, load_catalog

    loaded = load_catalog("catalog.yaml")   # load + validate: CatalogError lists every problem
    loaded.plan                             # the deployment waves
    result = generate("catalog.yaml")       # render, check, then write generated/

Sub-packages, each a subsystem, imports flowing one way (docs/architecture.md)::

    catalog    load, models, validate, graph, plan: what the platform is
    render     one module per output area: the files, as text, nothing written
    checks     the rendered files read back and held to the catalog
    write      generated/ replaced atomically; pipeline.generate() runs it all
    local      nexus up/status/restart/down/verify on this machine
    cluster    nexus deploy/cluster-status on Kubernetes
    authoring  nexus new/diff: changing the catalog

Every error raised on purpose is a ``nexus.errors.NexusError``. Names are imported on first
use, so `nexus validate` pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import Loaded, load_catalog
    from .errors import NexusError
    from .pipeline import Result, generate

__all__ = ["Loaded", "NexusError", "Result", "generate", "load_catalog"]

_HOME = {
    "Loaded": "catalog",
    "load_catalog": "catalog",
    "NexusError": "errors",
    "Result": "pipeline",
    "generate": "pipeline",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'nexus' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_HOME[name]}", __name__), name)
