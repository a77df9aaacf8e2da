"""The architecture holds: imports point down the pipeline and no package has an import circle
(import-linter's contracts in pyproject.toml), and the installed distribution is one package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import ROOT


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
