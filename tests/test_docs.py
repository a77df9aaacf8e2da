"""The user guide: it builds with `mkdocs build --strict`, its catalog reference is current,
and every `nexus` example in it runs, with the exit code and the output it shows."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from conftest import ROOT

from nexus.render.catalog_reference import reference_markdown

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
RUNNABLE = {"console", "bash"}  # ```text, ```yaml and the rest are shown, not run


@dataclass
class Example:
    page: str
    line: int
    command: str
    exit_code: int = 0
    output: list[str] = field(default_factory=list)  # lines the command must print ("..." elides)


def examples(page: Path) -> list[Example]:
    """`nexus ...` commands in ```console blocks (after `$ `, output lines below) and in
    ```bash blocks (lines starting with `nexus `). `# exit N` after a command: its exit code."""
    text = page.read_text(encoding="utf-8")
    out: list[Example] = []
    for block in FENCE.finditer(text):
        lang, body = block.group(1), block.group(2)
        if lang not in RUNNABLE:
            continue
        first = text.count("\n", 0, block.start(2)) + 1
        current: Example | None = None
        for offset, line in enumerate(body.splitlines()):
            command = line[2:] if lang == "console" and line.startswith("$ ") else line if lang == "bash" else None
            if command is not None:
                current = None
                if command.startswith("nexus "):
                    code = re.search(r"#\s*exit (\d+)", command)
                    current = Example(
                        page.relative_to(ROOT).as_posix(), first + offset, command, int(code.group(1)) if code else 0
                    )
                    out.append(current)
            elif current is not None and lang == "console":
                current.output.append(line)
    return out


def pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split("...")))


@pytest.fixture
def copy_of_the_repo(tmp_path: Path) -> Iterator[Path]:
    """The catalog and its generated tree in a fresh git repository (for `nexus diff`)."""
    shutil.copy(ROOT / "catalog.yaml", tmp_path / "catalog.yaml")
    shutil.copytree(ROOT / "generated", tmp_path / "generated")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "docs examples"]):
        subprocess.run(
            ["git", "-c", "user.name=docs", "-c", "user.email=docs@example.com", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )
    yield tmp_path
    # an example that failed half way may leave a platform running on the catalog's own ports
    if (tmp_path / ".nexus" / "run").exists():
        subprocess.run(
            [sys.executable, "-m", "cli", "down"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            timeout=120,
        )


@pytest.mark.xdist_group("shipped-ports")  # runs the shipped catalog on its own ports: one at a time
@pytest.mark.parametrize("page", [p for p in PAGES if examples(p)], ids=lambda p: p.name)
def test_every_command_example_runs_as_shown(page: Path, copy_of_the_repo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for ex in examples(page):
        args = shlex.split(ex.command, comments=True)
        result = subprocess.run(
            [sys.executable, "-m", "cli", *args[1:]],
            cwd=copy_of_the_repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        where = f"{ex.page}:{ex.line}: {ex.command}"
        assert result.returncode == ex.exit_code, (
            f"{where}\nexit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
        assert "Traceback" not in result.stderr, where
        printed = [line.rstrip() for line in (result.stdout + result.stderr).splitlines()]
        for expected in ex.output:
            if expected.strip() in ("", "..."):
                continue
            assert any(pattern(expected.rstrip()).fullmatch(line) for line in printed), (
                f"{where}\nshows {expected!r}, which it does not print:\n" + "\n".join(printed[:60])
            )


def test_every_command_has_an_example() -> None:
    from nexus import cli

    commands = sorted(typer.main.get_command(cli.app).commands)
    shown = {
        m
        for page in PAGES
        for m in re.findall(r"^(?:\$ )?nexus ([a-z][a-z-]*)", page.read_text(encoding="utf-8"), re.M)
    }
    assert [c for c in commands if c not in shown] == []


def test_the_catalog_reference_is_current() -> None:
    assert (DOCS / "catalog-reference.md").read_text(encoding="utf-8") == reference_markdown(), (
        "run: python -m nexus.render.catalog_reference > docs/catalog-reference.md"
    )


def test_mkdocs_build_strict_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "catalog-reference" / "index.html").exists()


def test_pages_missing_from_the_nav_are_added_to_it(tmp_path: Path) -> None:
    """Other work adds running.md and deploy.md: they build and show in the nav untouched."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "docs" / "running.md").write_text("# Running locally\n\nSee [commands](commands.md).\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(tmp_path / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert 'href="running/"' in (tmp_path / "site" / "index.html").read_text()
    assert not (tmp_path / "site" / "hooks.py").exists()
