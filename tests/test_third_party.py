"""Third-party checks of the generated platform, offline, with the real tools: checkov on every
built overlay (and on prod with Linkerd), hadolint on every Dockerfile, promtool on the local
Prometheus config. The tools come from scripts/install-tools.sh, found by tests/tools.py: a
missing one skips here, and fails under CI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import CATALOG, dump
from tools import find as tool

from nexus.pipeline import generate

OVERLAYS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped catalog (Istio), the same with Linkerd, and with PostgreSQL managed (its
    provisioning Job instead of a StatefulSet), generated through every check."""
    out = {}
    for mesh in ("istio", "linkerd", "managed"):
        data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
        data["platform"]["mesh"] = "istio" if mesh == "managed" else mesh
        if mesh == "managed":
            data["infrastructure"]["postgres"]["external"] = {"host": "db.example.com", "port": 5432, "secret": "rds"}
        root = tmp_path_factory.mktemp(mesh)
        (root / "catalog.yaml").write_text(dump(data), encoding="utf-8")
        generate(root / "catalog.yaml")
        out[mesh] = root / "generated"
    return out


def checkov_reports(trees: dict[str, Path], folder: Path) -> dict[str, dict]:
    """checkov once per built overlay, two at a time (it is slow to start and single-threaded)."""
    kubectl, checkov = tool("kubectl"), tool("checkov")
    targets = {
        f"{mesh}-{env}": trees[mesh] / "k8s/overlays" / env
        for mesh in trees
        for env in OVERLAYS
        if mesh == "istio" or env == "prod"
    }
    for name, overlay in targets.items():
        built = subprocess.run(
            [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        (folder / f"{name}.yaml").write_text(built, encoding="utf-8")
    reports: dict[str, dict] = {}
    names = sorted(targets)
    for pair in (names[i : i + 2] for i in range(0, len(names), 2)):
        runs = {
            n: subprocess.Popen(
                [
                    checkov,
                    "--framework",
                    "kubernetes",
                    "--skip-download",
                    "--compact",
                    "-o",
                    "json",
                    "-f",
                    str(folder / f"{n}.yaml"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in pair
        }
        for n, proc in runs.items():
            out, err = proc.communicate(timeout=300)
            report = json.loads(out)
            reports[n] = report[0] if isinstance(report, list) else report
            assert "summary" in reports[n], err
    return reports


def test_checkov_reports_no_failed_check_on_any_overlay(trees: dict[str, Path], tmp_path: Path) -> None:
    # one test, so that the parallel runner's two workers do not both pay for checkov
    reports = checkov_reports(trees, tmp_path)
    assert sorted(reports) == ["istio-dev", "istio-prod", "istio-staging", "linkerd-prod", "managed-prod"]
    for target, report in reports.items():
        failed = [(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
        assert failed == [], f"{target}: {failed}"
        assert report["summary"]["passed"] > 1000, target  # it did read the objects
        # a skip only with its reason, on the object it concerns: the image digest, per Deployment
        # (built after generate) and per infrastructure StatefulSet (an official image at a release tag)
        skipped = report["results"]["skipped_checks"]
        assert {s["check_id"] for s in skipped} == {"CKV_K8S_43"}, target
        kinds = sorted(s["resource"].split(".")[0] for s in skipped)
        infrastructure = ["Job"] + ["StatefulSet"] * 2 if target.startswith("managed") else ["StatefulSet"] * 3
        assert kinds == ["Deployment"] * 43 + infrastructure, target
        reasons = {s["resource"].split(".")[0]: s["check_result"]["suppress_comment"] for s in skipped}
        assert "digest is unknown" in reasons["Deployment"] and "pinned to a release tag" in reasons["StatefulSet"]


def test_hadolint_reports_nothing_on_any_dockerfile(trees: dict[str, Path]) -> None:
    hadolint = tool("hadolint")
    dockerfiles = sorted((trees["istio"] / "services").glob("*/Dockerfile"))
    assert len(dockerfiles) == 43
    run = subprocess.run([hadolint, *map(str, dockerfiles)], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def test_promtool_accepts_the_local_prometheus_config_and_its_alerts(trees: dict[str, Path]) -> None:
    promtool = tool("promtool")
    folder = trees["istio"] / "observability"
    run = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"], cwd=folder, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 129 rules found" in run.stdout  # 43 services x (down, error rate, p99)
    scraped = [
        c["static_configs"][0]["targets"]
        for c in yaml.safe_load((folder / "prometheus.yml").read_text())["scrape_configs"]
    ]
    assert len(scraped) == 43 and all(t[0].startswith("127.0.0.1:") for t in scraped)
