"""Files for the tools around Nexus: Backstage, CODEOWNERS, the GitHub workflow, pre-commit.
The workflow and the hooks may call only commands and options the CLI really has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import typer
import yaml
from conftest import CATALOG, ROOT, dump

from nexus.catalog import load_catalog, load_catalog_text
from nexus.checks import ecosystem as ecosystem_checks
from nexus.render import RenderContext, render

WORKFLOW = ROOT / ".github" / "workflows" / "nexus.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"


@pytest.fixture(scope="module")
def shipped() -> tuple[RenderContext, dict[str, str]]:
    loaded = load_catalog(CATALOG)
    ctx = RenderContext(loaded.catalog, loaded.plan)
    return ctx, render(ctx)


def test_each_service_is_a_backstage_component_owned_by_its_team(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = shipped
    doc = yaml.safe_load(files["services/puabo-nuki-order-processor/catalog-info.yaml"])
    assert doc["kind"] == "Component"
    assert doc["spec"] == {
        "type": "service",
        "lifecycle": "production",
        "owner": "group:commerce",
        "system": "nexus-cos",
        "dependsOn": [
            "component:billing-service",
            "component:puabo-nuki-inventory-mgr",
            "component:puabo-nuki-product-catalog",
            "component:puabo-nuki-shipping-service",
            "component:token-mgr",
            "resource:nats",
            "resource:postgres",
        ],
    }
    assert doc["metadata"]["annotations"] == {
        "nexus.example.com/docs-path": "generated/docs/services/puabo-nuki-order-processor.md"
    }
    kinds = [d["kind"] for d in yaml.safe_load_all(files["catalog-info.yaml"]) if d]
    assert kinds == ["Location", "System", *["Group"] * 6, *["Resource"] * 3]
    assert ecosystem_checks.run(ctx, files) == []


def test_codeowners_gives_each_service_folder_to_its_team(shipped: tuple[RenderContext, dict[str, str]]) -> None:
    _, files = shipped
    lines = files["CODEOWNERS"].splitlines()
    assert "/generated/services/puabo-blac-loan-processor/ @nexus-cos/fintech" in lines
    assert lines.index("/generated/ @nexus-cos/core-platform") < lines.index(
        "/generated/services/ai-service/ @nexus-cos/ai-ml"
    )  # last match wins
    rules = [line for line in lines if line and not line.startswith("#")]
    assert len(rules) == 2 + 43
    assert all(re.fullmatch(r"/\S+ @[\w-]+(/[\w.-]+)?", rule) for rule in rules)


def test_a_team_handle_in_the_catalog_is_used(minimal: dict) -> None:
    minimal["teams"]["core"]["handle"] = "@acme/platform-core"
    loaded = load_catalog_text(dump(minimal))
    files = render(RenderContext(loaded.catalog, loaded.plan))
    assert "/generated/services/auth/ @acme/platform-core" in files["CODEOWNERS"].splitlines()
    minimal["teams"]["core"]["handle"] = "acme team"
    with pytest.raises(
        Exception, match=r"teams\.core\.handle: 'acme team' is not a GitHub handle; write @user or @org/team"
    ):
        load_catalog_text(dump(minimal))


def test_checks_catch_a_wrong_owner_a_missing_dependency_and_a_bad_codeowners_line(
    shipped: tuple[RenderContext, dict[str, str]],
) -> None:
    ctx, files = shipped
    broken = dict(files)
    broken["services/kei-ai/catalog-info.yaml"] = files["services/kei-ai/catalog-info.yaml"].replace(
        "group:ai-ml", "group:media"
    )
    broken["services/ai-service/catalog-info.yaml"] = files["services/ai-service/catalog-info.yaml"].replace(
        '  - "component:token-mgr"\n', ""
    )
    broken["CODEOWNERS"] = files["CODEOWNERS"].replace(
        "/generated/services/glitch/ @nexus-cos/core-platform", "/generated/services/glitch/ @nexus-cos/media # moved"
    )
    failures = ecosystem_checks.run(ctx, broken)
    assert "kei-ai: services/kei-ai/catalog-info.yaml: owner is 'group:media', the catalog says team ai-ml" in failures
    assert any(f.startswith("ai-service: services/ai-service/catalog-info.yaml: dependsOn") for f in failures)
    assert any(f.startswith("CODEOWNERS:") and "a comment after the owners" in f for f in failures)
    assert any(f.startswith("glitch: CODEOWNERS: /generated/services/glitch/ is owned by") for f in failures)


# -- the workflow and the hooks call only what exists ---------------------------------------------


def nexus_invocations(script: str) -> list[list[str]]:
    """Every `nexus ...` command line in a shell script, as arguments (GitHub expressions and
    shell variables stand in as plain words; a redirection ends the command)."""
    out = []
    for line in script.splitlines():
        line = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", line).split("#", 1)[0]
        if not line.strip():
            continue
        words = shlex.split(line)
        for i, word in enumerate(words):
            if word == "nexus" and (i == 0 or words[i - 1] in {"&&", "||", ";", "|"}):
                args = []
                for w in words[i + 1 :]:
                    if w in {"&&", "||", ";", "|", ">", ">>"}:
                        break
                    args.append(w)
                out.append(args)
    return out


def parse_with_the_real_cli(args: list[str]) -> None:
    """Let click parse the arguments exactly as `nexus` would, without running the command:
    an unknown command, option or bad value raises a UsageError."""
    from nexus import cli

    group = typer.main.get_command(cli.app)
    ctx = group.make_context("nexus", list(args), resilient_parsing=False)
    name, command, rest = group.resolve_command(ctx, list(args))
    assert command is not None, f"no command {name!r}"
    command.make_context(name, rest, parent=ctx)


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_workflow_runs_validate_check_diff_and_tests_on_catalog_template_and_generator_changes() -> None:
    wf = workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    for event in ("pull_request", "push"):
        assert {"catalog.yaml", "templates/**", "generator/**"} <= set(on[event]["paths"])
    runs = [step.get("run", "") for step in wf["jobs"]["nexus"]["steps"]]
    calls = [args for run in runs for args in nexus_invocations(run)]
    assert [a[:1] for a in calls] == [["validate"], ["generate"], ["diff"]]
    assert "--check" in calls[1]
    assert calls[2][1:3] == ["--base", "origin/EXPR"]
    assert any("nexus diff" in r and '>> "$GITHUB_STEP_SUMMARY"' in r for r in runs)
    assert "pip install -c lock/nexus.txt -e . -e '.[dev]'" in runs  # README's install, from the lock
    assert "bash scripts/install-tools.sh && python -m pytest -n 2 -q" in runs
    latest = wf["jobs"]["latest"]
    assert "schedule" in on and [s["run"] for s in latest["steps"] if "run" in s] == ["bash .ci/run --latest"]


def test_every_nexus_call_in_the_workflow_and_the_hooks_parses_with_the_real_cli() -> None:
    calls = [args for step in workflow()["jobs"]["nexus"]["steps"] for args in nexus_invocations(step.get("run", ""))]
    hooks = yaml.safe_load(HOOKS.read_text())
    assert {h["id"] for h in hooks} == {"nexus-validate", "nexus-generate-check"}
    for hook in hooks:
        entry = shlex.split(hook["entry"])
        assert entry[0] == "nexus" and hook["language"] == "python" and hook["pass_filenames"] is False
        assert re.search(hook["files"], "catalog.yaml")
        calls.append(entry[1:])
    assert len(calls) == 5
    for args in calls:
        parse_with_the_real_cli(args)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["deploy-everything"], "No such command"),
        (["generate", "--chek"], "No such option"),
        (["diff", "--base"], "requires an argument"),
    ],
)
def test_the_parser_really_refuses_what_does_not_exist(args: list[str], error: str) -> None:
    with pytest.raises(Exception, match=error):  # click's UsageError (typer may vendor click)
        parse_with_the_real_cli(args)


def test_a_plain_install_ships_the_templates(tmp_path: Path) -> None:
    """pre-commit installs a hook repository with `pip install .` (no -e): the wheel must carry
    templates/, or `nexus generate --check` cannot render."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "cli.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("generator", "templates"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "nexus/templates/service/cookiecutter.json" in names
    assert "nexus/templates/service/{{cookiecutter.name}}/{{cookiecutter.package}}/spec.py" in names
    assert "nexus/templates/runtime/nexus_runtime/app.py" in names
    assert "nexus/render/context.py" in names and "nexus/cli.py" in names
    # one top-level import package: nothing named `cli` or `generator` lands in site-packages
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"nexus"}
