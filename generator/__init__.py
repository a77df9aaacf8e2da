"""Nexus: one catalog in, a whole platform out.

The library, in pipeline order (the `nexus` CLI is a thin layer over it)::

    from nexus.catalog import load_catalog
    from nexus.generate import generate

    loaded = load_catalog("catalog.yaml")   # load + validate: CatalogError lists every problem
    loaded.plan                             # the deployment waves
    result = generate("catalog.yaml")       # render, check, then write generated/

One module per stage: load, validate, plan, render_* (one per output area), check, write.
Every error raised on purpose is a ``nexus.errors.NexusError``. Nothing is imported here,
so `nexus validate` pays only for what it uses.
"""
