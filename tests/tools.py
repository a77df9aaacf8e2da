"""Where the tests find the programs they run but never import (checkov, hadolint, promtool,
kubectl): first the tools environment that scripts/install-tools.sh makes (TOOLS, from
lock/tools.txt), then PATH.

A missing program skips the tests that need it, with the command that installs it as the
reason; under CI (CI=true) it fails them instead, so that CI never passes having run less.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"  # scripts/install-tools.sh makes it; .gitignore keeps it out of git

INSTALL = {
    "checkov": "bash scripts/install-tools.sh",
    "hadolint": "bash scripts/install-tools.sh",
    "promtool": "bash scripts/install-tools.sh (Debian's prometheus package)",
    "prometheus": "bash scripts/install-tools.sh (Debian's prometheus package)",
    "kubectl": "install kubectl: https://kubernetes.io/docs/tasks/tools/",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find(name: str) -> str:
    """The path of program ``name``, else skip (fail under CI) with how to install it."""
    path = shutil.which(name, path=str(TOOLS / ("Scripts" if os.name == "nt" else "bin"))) or shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed; {INSTALL[name]}"
    if in_ci():
        pytest.fail(f"{message} (CI runs every check: a missing tool is a failure there)", pytrace=False)
    pytest.skip(message)


def asyncapi_parser() -> tuple[str, Path]:
    """node and the folder holding @asyncapi/parser (scripts/install-tools.sh), else skip
    (fail under CI) with how to install them."""
    node = shutil.which("node")
    modules = TOOLS / "npm" / "node_modules"
    if node is not None and (modules / "@asyncapi" / "parser").is_dir():
        return node, modules
    message = "the AsyncAPI parser is not installed; install node, then: bash scripts/install-tools.sh"
    if in_ci():
        pytest.fail(f"{message} (CI runs every check: a missing tool is a failure there)", pytrace=False)
    pytest.skip(message)


def paths_into(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``value`` (keys and list indexes), outermost first; not the root itself."""
    found = [at] if at else []
    entries = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in entries:
        found += paths_into(inner, (*at, key))
    return found


def broken_at_random(
    files: dict[str, str], path: str, index: int, doc: dict[str, Any], rng: random.Random, values: list[Any]
) -> tuple[dict[str, str], tuple[Any, ...]]:
    """``files`` with the ``index``-th document of ``path`` (``doc``) broken at one random place:
    the field removed, or set to one of ``values`` (as a template slip would). Also says where."""
    where = rng.choice(paths_into(doc))
    changed = yaml.safe_load(yaml.safe_dump(doc))
    parent = changed
    for key in where[:-1]:
        parent = parent[key]
    if rng.random() < 0.5:
        del parent[where[-1]]
    else:
        parent[where[-1]] = rng.choice(values)
    docs = list(yaml.safe_load_all(files[path]))
    docs[index] = changed
    return {**files, path: yaml.safe_dump_all(docs, sort_keys=False)}, where
