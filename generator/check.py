"""Check stage: rendered files are verified before a byte is written.

Each render area contributes its own checks (``render_<area>.checks``); this module adds the
ones that cut across areas (every file parses) and runs them all, collecting every failure.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from . import render_docs, render_ecosystem, render_k8s, render_mesh, render_services
from .errors import OutputCheckError
from .k8s_schema import SchemaValidator
from .load import FAST_LOADER
from .render import RenderContext


def parses(files: dict[str, str], verified: frozenset[str] = frozenset()) -> list[str]:
    """Every Python, YAML and JSON file parses (except those already ``verified``)."""
    failures: list[str] = []
    for path, text in files.items():
        if path in verified:
            continue
        try:
            if path.endswith(".py"):
                ast.parse(text, filename=path)
            elif path.endswith((".yaml", ".yml")):
                # libyaml's event parser is the syntax check; building Python objects would
                # triple the cost, and the Kubernetes checks read the manifests' content anyway
                for _ in yaml.parse(text, Loader=FAST_LOADER):
                    pass
            elif path.endswith(".json"):
                json.loads(text)
        except (SyntaxError, yaml.YAMLError, ValueError) as exc:
            failures.append(f"{path}: does not parse: {exc}".replace("\n", " "))
    return failures


def check(
    ctx: RenderContext, files: dict[str, str], *, strict: bool = False, verified: frozenset[str] = frozenset(), cache: Path | None = None
) -> None:
    """Raise OutputCheckError listing every failure; return quietly when all pass.

    ``verified`` names files whose exact bytes already passed these checks when they were
    written (the manifest records their hash): per-file checks skip them, so a run that
    changes little checks little. Checks across files (ports, URLs, policy, waves) always run.
    ``cache`` is a folder where the hashes of manifests that passed the Kubernetes schemas are
    kept between runs. ``strict`` ignores both and checks everything from scratch (CI runs it)."""
    verified = frozenset() if strict else verified
    validator = SchemaValidator()
    schema_cache = cache / "k8s-schema.json" if cache is not None and not strict else None
    if schema_cache is not None:
        validator.load(schema_cache)
    failures = parses(files, verified)
    for area in (render_services, render_docs, render_ecosystem):
        failures.extend(area.checks(ctx, files))
    failures.extend(render_k8s.checks(ctx, files, validator=validator))
    failures.extend(render_mesh.checks(ctx, files, validator=validator))
    if failures:
        raise OutputCheckError(failures)
    if schema_cache is not None:
        validator.save(schema_cache)
