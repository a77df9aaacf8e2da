"""`nexus diff`: a catalog change as a reviewer sees it, against a real git base."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from conftest import dump, nexus

from nexus.pipeline import generate


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=repo, check=True, capture_output=True
    )


@pytest.fixture
def repo(tmp_path: Path, minimal: dict) -> Path:
    """A git repository whose HEAD holds the minimal catalog (with a second team) and its tree."""
    minimal["teams"]["media"] = {"title": "Media", "contact": "media@example.com", "oncall": "oncall@example.com"}
    minimal["services"]["media"]["team"] = "media"
    minimal["services"]["gateway"]["uses"] = ["postgres"]  # still used once change() takes it from auth
    (tmp_path / "catalog.yaml").write_text(dump(minimal))
    generate(tmp_path / "catalog.yaml")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base")
    return tmp_path


def change(repo: Path, minimal: dict) -> dict:
    data = copy.deepcopy(minimal)
    data["teams"]["media"] = {"title": "Media", "contact": "media@example.com", "oncall": "oncall@example.com"}
    data["services"]["media"]["team"] = "media"
    data["services"]["tickets"] = {
        "port": 4010,
        "category": "platform",
        "team": "media",
        "description": "Tickets | seats",
        "depends_on": {"auth": "hard", "media": "soft"},
    }
    data["services"]["media"]["port"] = 4012  # port changed
    data["services"]["gateway"]["depends_on"]["media"] = "hard"  # kind changed: policy unchanged
    data["services"]["media"]["depends_on"] = {}  # media -> auth removed (cross-team)
    data["services"]["auth"]["uses"] = []  # auth -> postgres no longer allowed
    (repo / "catalog.yaml").write_text(dump(data))
    return data


def test_no_change_says_so(repo: Path) -> None:
    result = nexus("diff", "--catalog", str(repo / "catalog.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "## nexus diff against `HEAD`\n\n"
        "No change to the catalog's services, edges or policy, and no generated file would change.\n"
    )


def test_json_lists_every_kind_of_change(repo: Path, minimal: dict) -> None:
    change(repo, minimal)
    result = nexus("diff", "--json", "--catalog", str(repo / "catalog.yaml"))
    assert result.returncode == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["base"] == "HEAD"
    assert d["services_added"] == [
        {"name": "tickets", "port": 4010, "team": "media", "category": "platform", "stage": "apps"}
    ]
    assert d["services_removed"] == []
    assert d["ports_changed"] == [{"name": "media", "before": 4002, "after": 4012}]
    assert d["edges_added"] == [
        {
            "source": "tickets",
            "target": "auth",
            "kind": "hard",
            "source_team": "media",
            "target_team": "core",
            "cross_team": True,
        },
        {
            "source": "tickets",
            "target": "media",
            "kind": "soft",
            "source_team": "media",
            "target_team": "media",
            "cross_team": False,
        },
    ]
    assert d["cross_team_edges_added"] == d["edges_added"][:1]
    assert d["edges_removed"] == [
        {
            "source": "media",
            "target": "auth",
            "kind": "hard",
            "source_team": "media",
            "target_team": "core",
            "cross_team": True,
        }
    ]
    assert d["edges_changed"] == [
        {
            "source": "gateway",
            "target": "media",
            "kind": "hard",
            "before": "soft",
            "source_team": "core",
            "target_team": "media",
            "cross_team": True,
        }
    ]
    assert d["allowed_added"] == [
        {"source": "tickets", "target": "auth", "because": "depends_on"},
        {"source": "tickets", "target": "media", "because": "depends_on"},
    ]
    assert d["allowed_removed"] == [
        {"source": "auth", "target": "postgres", "because": "uses"},
        {"source": "media", "target": "auth", "because": "depends_on"},
    ]
    assert d["services_changed"] == [{"name": "auth", "field": "uses", "before": ["postgres"], "after": []}]
    assert d["sections_changed"] == []
    assert "services/tickets/tickets/spec.py" in d["files"]["added"]
    assert "services/media/media/spec.py" in d["files"]["changed"]
    assert not any(p.endswith("routes.py") for p in d["files"]["changed"])  # team-owned: generate never rewrites them


def test_predicted_files_are_the_ones_generate_then_writes(repo: Path, minimal: dict) -> None:
    change(repo, minimal)
    d = json.loads(nexus("diff", "--json", "--catalog", str(repo / "catalog.yaml")).stdout)
    predicted = sorted(d["files"]["added"] + d["files"]["changed"] + d["files"]["removed"])
    assert predicted == generate(repo / "catalog.yaml").touched


def test_markdown_is_a_pr_comment_with_cross_team_edges_highlighted(repo: Path, minimal: dict) -> None:
    change(repo, minimal)
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "commit", "-q", "-am", "tickets")
    result = nexus("diff", "--base", "main", "--catalog", str(repo / "catalog.yaml"))
    assert result.returncode == 0, result.stderr
    md = result.stdout
    assert md.startswith("## nexus diff against `main`\n")
    assert "**1 service added, 0 removed, 1 port changed; 2 edges added (1 cross-team), 1 removed;" in md
    assert (
        "> [!WARNING]\n> New cross-team dependencies: the called team should review.\n> - `tickets` (media) → `auth` "
        "(core), hard\n" in md
    )
    assert "| added | `tickets` | 4010 | media | platform | apps |" in md
    assert "| `media` | 4002 | 4012 |" in md
    assert "| added | `tickets` (media) | `auth` (core) | hard | **cross-team** |" in md
    assert "| removed | `media` (media) | `auth` (core) | hard | **cross-team** |" in md
    assert "| kind changed | `gateway` (core) | `media` (media) | soft → hard | **cross-team** |" in md
    assert "| no longer allowed | `auth` | `postgres` | uses |" in md
    assert "- added: `services/tickets/tickets/spec.py`" in md


def test_an_unknown_base_is_one_clear_error(repo: Path) -> None:
    result = nexus("diff", "--base", "no-such-branch", "--catalog", str(repo / "catalog.yaml"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot read catalog.yaml at 'no-such-branch': ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("base", ["--output=written-by-git", "-p"])
def test_a_base_that_git_would_read_as_an_option_is_refused(repo: Path, base: str) -> None:
    """`git show --output=FILE:./catalog.yaml` writes a file: a --base that starts with '-' (a
    value a CI job takes from elsewhere) never reaches git."""
    (repo / "written-by-git:.").mkdir()  # where git's --output would write its file
    result = nexus("diff", f"--base={base}", "--catalog", str(repo / "catalog.yaml"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    said = f"error: --base {base!r} is not a git ref (none starts with '-'); pass a branch, tag or commit\n"
    assert result.stderr == said
    assert list((repo / "written-by-git:.").iterdir()) == []


def test_an_invalid_base_catalog_is_named_with_its_ref(repo: Path, minimal: dict) -> None:
    (repo / "catalog.yaml").write_text((repo / "catalog.yaml").read_text().replace("team: media", "team: nobody", 1))
    git(repo, "commit", "-q", "-am", "broken")
    (repo / "catalog.yaml").write_text(dump(minimal))
    result = nexus("diff", "--catalog", str(repo / "catalog.yaml"))
    assert result.returncode == 1
    assert "HEAD:catalog.yaml:" in result.stderr and "unknown team 'nobody'" in result.stderr
