"""templates/service is a real cookiecutter template: it works on its own, and for a catalog
service it makes byte for byte the files `nexus generate` makes. One source, not two copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import CATALOG, ROOT
from cookiecutter.main import cookiecutter

from nexus.catalog import load_catalog
from nexus.render import services as render_services
from nexus.render.context import RenderContext

TEMPLATE = ROOT / "templates" / "service"
GENERATED = ROOT / "generated"
MANIFEST = json.loads((GENERATED / ".nexus-manifest.json").read_text(encoding="utf-8"))["files"]


def files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(autouse=True)
def hooks_kept_out_of_the_system_temp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cookiecutter renders each hook into a temporary file and never removes it (cookiecutter
    issue #886, closed as intended): a run of these tests left 47 files in /tmp. Here they go to
    a folder of pytest's own, which pytest prunes; the API by ``tempfile``, the CLI by TMPDIR.
    And it records every run's answers in ~/.cookiecutter_replay/ (and clones into
    ~/.cookiecutters/): a run of these tests left 44 files in the home folder of whoever ran
    them. Here a user config (COOKIECUTTER_CONFIG, read by the API and the CLI alike) puts both
    in that folder: HOME alone would not do, as the API's defaults are named at its import."""
    folder = tmp_path_factory.mktemp("cookiecutter-hooks")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump({"replay_dir": str(folder / "replay"), "cookiecutters_dir": str(folder / "clones")}),
        encoding="utf-8",
    )
    monkeypatch.setenv("COOKIECUTTER_CONFIG", str(config))


@pytest.fixture(scope="module")
def ctx() -> RenderContext:
    loaded = load_catalog(CATALOG)
    return RenderContext(loaded.catalog, loaded.plan)


def test_standalone_through_the_cookiecutter_cli_makes_a_service_that_passes_its_tests(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            str(TEMPLATE),
            "name=box-office",
            "port=8123",
            "team=media",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "box-office"
    assert sorted(files(out)) == [
        "Dockerfile",
        "README.md",
        "box_office/__init__.py",
        "box_office/__main__.py",
        "box_office/main.py",
        "box_office/routes.py",
        "box_office/settings.py",
        "box_office/spec.py",
        "pyproject.toml",
        "tests/conftest.py",
        "tests/test_health.py",
        "tests/test_routes.py",
    ]
    assert "port=8123," in (out / "box_office/spec.py").read_text()
    assert 'team="media",' in (out / "box_office/spec.py").read_text()
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", "tests"],
        cwd=out,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(GENERATED / "runtime"), str(out)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-2000:]
    assert "4 passed" in tests.stdout


def test_python_api_with_each_catalog_service_context_equals_what_generate_renders(
    ctx: RenderContext, tmp_path: Path
) -> None:
    compiled = render_services.compile_template(render_services.template_env())
    for name in sorted(ctx.catalog.services):
        context = render_services.service_context(ctx, name)
        out = Path(cookiecutter(str(TEMPLATE), no_input=True, extra_context=context, output_dir=str(tmp_path / name)))
        made = files(out)
        rendered = {
            path.removeprefix(f"{name}/"): text
            for path, text in render_services.render_service(compiled, context).items()
        }
        assert made == rendered, name
        # and what generate wrote: the same files (the team's own as the team left them: created
        # once from the template, never rewritten); beside them only what other areas add
        # (Backstage), the event files nexus renders beside the template (one handler per
        # consumed channel), and files the team added (no entry in the manifest: never ours)
        on_disk = files(GENERATED / "services" / name)
        ours = {p: text for p, text in made.items() if not render_services.team_owned(f"services/{name}/{p}")}
        assert {p: on_disk[p] for p in ours} == ours, name
        assert set(made) <= set(on_disk), name
        beside = {
            p.removeprefix(f"{name}/") for p in render_services.render_events(render_services.template_env(), context)
        }
        added = {p for p in on_disk if f"services/{name}/{p}" not in MANIFEST}
        assert set(on_disk) - set(made) - added == {"catalog-info.yaml", *beside}, name


def test_cli_with_a_catalog_service_context_as_config_equals_generated(ctx: RenderContext, tmp_path: Path) -> None:
    """A team can reproduce its service by hand: the context as cookiecutter's default_context."""
    name = "backend-api"  # hard and soft dependencies, and on all three critical paths
    config = tmp_path / "config.yaml"
    context = render_services.service_context(ctx, name)
    # its replays kept here too: a --config-file replaces COOKIECUTTER_CONFIG's (the fixture above)
    config.write_text(yaml.safe_dump({"default_context": context, "replay_dir": str(tmp_path)}), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--config-file",
            str(config),
            str(TEMPLATE),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    made = files(tmp_path / "out" / name)
    assert '"payment-processing": FlowHop(next="billing-service")' in made["backend_api/spec.py"]
    on_disk = files(GENERATED / "services" / name)
    assert made == {p: on_disk[p] for p in made}


def test_no_value_can_add_a_dockerfile_instruction_even_unvalidated(tmp_path: Path) -> None:
    """Defence in depth behind validation: cookiecutter run by hand takes any text, and the
    Dockerfile and pyproject.toml keep each value on its line, quoted where it is a string."""

    def render(**context: str) -> tuple[str, str]:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        out = Path(
            cookiecutter(
                str(TEMPLATE), no_input=True, extra_context={"name": "box-office", **context}, output_dir=str(folder)
            )
        )
        return (out / "Dockerfile").read_text(), (out / "pyproject.toml").read_text()

    plain_docker, _ = render()
    hostile = "x\nRUN touch /tmp/pwned\n"
    docker, pyproject = render(image_registry=f"ghcr.io/{hostile}", version=f'1.0.0"\n[tool.pwned]\nx = "{hostile}')

    def instructions(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]

    assert instructions(docker) == instructions(plain_docker)
    assert "RUN touch /tmp/pwned" in docker  # kept, on the comment line, so a reader sees it
    project = tomllib.loads(pyproject)
    assert project["project"]["version"].startswith('1.0.0"\n[tool.pwned]')  # one string, read back exactly
    assert "pwned" not in project.get("tool", {})


def test_team_files_rendered_once_with_marks_equal_the_template_rendered_per_service(monkeypatch) -> None:
    """team_files renders the template's `_team_owned` paths once, with marks for the name and
    the package; for any name that equals rendering them for that service, and a path that
    does more with the name than insert it falls back to rendering per service."""
    from nexus.catalog.naming import pkg

    for name in ("ledger-mgr", "a", "x2-y-z", "package", "name"):
        for postgres in (True, False):
            assert render_services.team_files(name, postgres) == render_services._rendered_team_files(
                name, pkg(name), postgres
            )
    config = {**render_services.template_config()}
    config["_team_owned"] = [*config["_team_owned"], "{{ cookiecutter.name | upper }}.md"]
    monkeypatch.setattr(render_services, "template_config", lambda: config)
    render_services._team_file_shape.cache_clear()
    render_services.team_files.cache_clear()
    try:
        assert render_services._team_file_shape(True) is None
        assert render_services.team_files("ledger-mgr")[-1] == "LEDGER-MGR.md"
    finally:
        monkeypatch.undo()
        render_services._team_file_shape.cache_clear()
        render_services.team_files.cache_clear()
