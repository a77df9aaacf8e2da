"""The architecture holds: imports point down the pipeline and no package has an import circle
(import-linter's contracts in pyproject.toml), the installed distribution is one package, and the
code (ours and the services' shared runtime) is ruff-clean, ruff-formatted and mypy-clean under
the settings in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import ROOT


def _tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of the dev extra's tools, from this environment, on the checkout."""
    return subprocess.run(
        [str(Path(sys.executable).parent / name), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing() -> None:
    result = _tool("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_code_is_ruff_formatted() -> None:
    result = _tool("ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_strict_finds_nothing() -> None:
    """mypy --strict with the pydantic plugin over generator/ and templates/runtime (pyproject.toml)."""
    result = _tool("mypy", "--cache-dir", "/dev/null")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_sub_package_is_in_a_layer() -> None:
    """A new sub-package must take its place in the layers, or the contract would not see it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    named = {m.strip().removeprefix("nexus.") for layer in layers for m in layer.split("|")}
    packages = {p.name for p in (ROOT / "generator").iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in (ROOT / "generator").glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert packages | modules == named
