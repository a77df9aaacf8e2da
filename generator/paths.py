"""Where Nexus finds things, and which files in a folder are sources: one rule for every tree
Nexus reads whole.

The templates (rendered, copied as the services' runtime, hashed into the cache keys) and the
generated tree (compared, written, carried over by a backup) are folders people run tools in:
mypy, ruff, pytest and Python itself leave caches there. Those are never inputs or outputs, so
reading one would change a render (a copied `.mypy_cache`) or break it (bytes that are not
UTF-8). Light on purpose: the no-op run hashes the templates without loading any renderer.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import sys
from functools import cache
from importlib import metadata
from pathlib import Path

from .errors import CatalogError, Problem

# Folders that tools drop into a tree: neither ours nor the team's, never read, never carried over.
TOOL_CACHES = frozenset(
    {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules", ".hypothesis"}
)


def _templates() -> Path:
    """templates/ (package ``nexus.templates``): beside generator/ in a checkout or an editable
    install, inside the package in a wheel (pre-commit's `language: python`)."""
    return Path(str(importlib.resources.files("nexus.templates"))).resolve()


TEMPLATES = _templates()
LINT_RULES = TEMPLATES / "lint" / "ruff.toml"  # ruff's rules for Nexus's code and the code it generates


def open_catalog(catalog: str | Path) -> int:
    """A read-only descriptor of the catalog file, opened without waiting: open() of a named
    pipe that nothing writes to waits for ever. Its reads wait again, so `--catalog <(...)` is
    read whole, and a pipe with no writer reads as empty at once."""
    fd = os.open(catalog, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(fd, True)
    return fd


NO_FOLDER = (
    "is a pipe with no folder (standard input, or <(...)), and this command works beside the catalog "
    "file (generated/, .nexus/, its git history): save it to a file and pass that (nexus generate can "
    "write elsewhere with --out; validate, plan and graph read a pipe as it is)"
)


def catalog_folder(catalog: str | Path) -> Path:
    """The folder a catalog file lives in: `generated/` and `.nexus/` are beside it. A catalog
    read from an unnamed pipe (`-c -`, `-c <(...)`) has none: its path leads to /proc's name
    for the pipe (`/proc/<pid>/fd/pipe:[...]`), which is in no folder, so where nothing can be
    kept; it is refused here, before anything is taken or written. (A named pipe made with
    mkfifo is in a folder, which is then the catalog's.)"""
    path = Path(catalog)
    found = path.resolve()
    if os.path.exists(path) and not os.path.lexists(found):  # missing: loading it says so
        raise CatalogError([Problem(0, 0, "", NO_FOLDER, file=str(catalog))])
    return found.parent


def output_folder(catalog: str | Path, out: str | Path | None = None) -> Path:
    """Where `nexus generate` writes for ``catalog``: ``out`` (absolute and normalized: the lock
    and staging paths are named after the folder's own name), else `generated/` beside it."""
    return Path(os.path.abspath(out)) if out is not None else catalog_folder(catalog) / "generated"


TOOL_METADATA = ".egg-info"  # the ending of a build's metadata folder
TOOL_BYTECODE = (".pyc", ".pyo")  # the endings of compiled bytecode


def tool_folder(name: str) -> bool:
    """Whether a folder called ``name`` is a tool's cache (or a build's metadata), not a source."""
    return name in TOOL_CACHES or name.endswith(TOOL_METADATA)


def tool_file(name: str) -> bool:
    """Whether a file called ``name`` is a tool's leftover (compiled bytecode), not a source."""
    return name.endswith(TOOL_BYTECODE)


def source_files(root: Path) -> list[Path]:
    """The source files under ``root``, sorted by their path relative to it (the same order on
    every machine); tools' folders are not entered, their files not listed."""
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not tool_folder(d)]
        found.extend(Path(folder, f) for f in filenames if not tool_file(f) and os.path.isfile(os.path.join(folder, f)))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


_LIBRARIES = ("jinja2", "pyyaml", "pydantic")  # the libraries whose version can change the output


@cache
def code_key() -> str:
    """A hash of what turns a catalog into files: every template, our own code, the libraries
    that shape the output and the interpreter. Whatever is kept between runs by what it was
    rendered from carries it, so that a change to any of these renders again."""
    # the installed versions, read from their metadata: importing Jinja only to ask would cost a
    # run with nothing to do a sixth of its time
    libraries = "|".join(metadata.version(name) for name in _LIBRARIES)
    digest = hashlib.blake2b(f"{sys.version}|{libraries}".encode(), digest_size=16)
    for folder in (TEMPLATES, Path(__file__).resolve().parent):
        for path in source_files(folder):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
