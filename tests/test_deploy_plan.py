"""The apply plan of `nexus deploy`, with no cluster: build, order by the plan, select, print."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import CATALOG, MINIMAL, ROOT, dump
from overlays import write_overlay
from typer.testing import CliRunner

from nexus.catalog import load_catalog
from nexus.cli import app
from nexus.cluster.deploy import plan_overlay
from nexus.cluster.overlay import KIND_RANK, build, select
from nexus.errors import OverlayError

pytestmark = pytest.mark.usefixtures("kubectl")  # it builds the overlays (`kubectl kustomize`)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The shipped catalog beside a fixture overlay named after its services."""
    root = tmp_path_factory.mktemp("shipped")
    shutil.copy(CATALOG, root / "catalog.yaml")
    loaded = load_catalog(root / "catalog.yaml")
    write_overlay(root, loaded)
    return root, loaded


def test_apply_order_is_the_deployment_plan(shipped) -> None:
    _root, loaded = shipped
    steps = plan_overlay(loaded, "dev")
    assert steps[0].wave is None and [o.ref for o in steps[0].objects] == ["Namespace/nexus-cos"]
    assert steps[1].wave == 0 and [o.ref for o in steps[1].objects] == ["NetworkPolicy/default-deny"]
    expected = [(w.number, tuple(sorted((*w.infrastructure, *w.services)))) for w in loaded.plan.waves]
    assert [(s.wave, s.services) for s in steps[2:]] == expected
    titles = {s.name: s.title for s in loaded.catalog.stages}
    assert [s.stage for s in steps[2:]] == [titles[w.stage] for w in loaded.plan.waves]
    # every service's seven objects land in its own wave, in the rank table's order
    for step in steps[2:]:
        for service in step.services:
            mine = [o.kind for o in step.objects if o.service == service]
            assert mine == sorted(mine, key=KIND_RANK.__getitem__)
        ranks = [o.rank() for o in step.objects]
        assert ranks == sorted(ranks)
    first_deployment = next(o for s in steps for o in s.objects if o.kind == "Deployment")
    assert first_deployment.service == loaded.plan.waves[1].services[0]


def test_a_wave_that_disagrees_with_the_plan_is_refused(tmp_path: Path) -> None:
    shutil.copy(CATALOG, tmp_path / "catalog.yaml")
    loaded = load_catalog(tmp_path / "catalog.yaml")
    write_overlay(tmp_path, loaded, waves={"token-mgr": 9})
    with pytest.raises(OverlayError, match=r"ServiceAccount/token-mgr \(token-mgr\): sync-wave 9, the plan says 4"):
        plan_overlay(loaded, "dev")


def test_select_a_wave_or_services_keeps_setup(shipped) -> None:
    _, loaded = shipped
    steps = plan_overlay(loaded, "dev")
    one = select(steps, wave=7)
    assert [s.label for s in one] == ["setup", "wave  7"] and one[1].services == ("auth-service", "auth-service-v2")
    only = select(steps, only=["token-mgr", "backend-api"])
    assert [(s.label, s.services) for s in only] == [
        ("setup", ()),
        ("wave  4", ("token-mgr",)),
        ("wave  8", ("backend-api",)),
    ]
    assert len(only[1].objects) == 7
    with pytest.raises(OverlayError, match=r"--only nope: not a service of this overlay"):
        select(steps, only=["nope"])
    with pytest.raises(OverlayError, match=r"--wave 99: the overlay has no such wave \(it has: 0, 1, 2,"):
        select(steps, wave=99)


def test_a_broken_kustomization_is_one_overlay_error(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(OverlayError, match=r"`kubectl kustomize` failed: .*missing.yaml"):
        build(tmp_path)
    with pytest.raises(OverlayError, match=r"no kustomization\.yaml here"):
        build(tmp_path / "nowhere")


def test_missing_overlay_names_what_exists(shipped) -> None:
    root, _ = shipped
    result = CliRunner().invoke(
        app, ["deploy", "--overlay", "prod", "--dry-run", "client", "--catalog", str(root / "catalog.yaml")]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: no overlay 'prod' in {root / 'generated/k8s/overlays'} (it has: dev); run `nexus generate` to write "
        "the overlays"
    )


def test_client_dry_run_prints_the_wave_order_and_needs_no_cluster(shipped, tmp_path: Path) -> None:
    root, loaded = shipped
    env = {"KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}
    result = CliRunner().invoke(
        app, ["deploy", "--overlay", "dev", "--dry-run=client", "--catalog", str(root / "catalog.yaml")], env=env
    )
    assert result.exit_code == 0, result.output
    heads = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    titles = {s.name: s.title for s in loaded.catalog.stages}
    expected = ["setup", "wave  0"] + [
        f"wave {w.number:>2}  {titles[w.stage]}: {', '.join(sorted((*w.infrastructure, *w.services)))}"
        for w in loaded.plan.waves
    ]
    assert heads[:-1] == expected
    objects = 7 * len(loaded.catalog.services) + 2 + len(loaded.catalog.infrastructure)
    assert heads[-1] == f"{objects} objects in {len(expected)} steps; client dry run: no cluster was contacted"
    lines = result.stdout.splitlines()
    assert lines[:4] == ["setup", "    Namespace/nexus-cos", "wave  0", "    NetworkPolicy/default-deny"]
    at = lines.index("wave  2  Core Services: pv-keys")
    assert lines[at + 1 : at + 8] == [
        "    NetworkPolicy/pv-keys",
        "    ServiceAccount/pv-keys",
        "    ConfigMap/pv-keys-config",
        "    Service/pv-keys",
        "    Deployment/pv-keys",
        "    HorizontalPodAutoscaler/pv-keys",
        "    PodDisruptionBudget/pv-keys",
    ]


def test_only_accepts_commas_and_repeats(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(dump(MINIMAL))
    write_overlay(tmp_path, load_catalog(tmp_path / "catalog.yaml"))
    args = ["deploy", "--overlay", "dev", "--dry-run", "client", "--catalog", str(tmp_path / "catalog.yaml")]
    result = CliRunner().invoke(app, [*args, "--only", "gateway,media", "--only", "auth"])
    assert result.exit_code == 0, result.output
    heads = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert heads == [
        "setup",
        "wave  2  Core: auth",
        "wave  3  Apps: gateway, media",
        "22 objects in 3 steps; client dry run: no cluster was contacted",
    ]


@pytest.mark.skipif(
    not (ROOT / "generated/k8s/overlays/dev").is_dir(),
    reason="generated/k8s/overlays/dev is not generated yet (the k8s renderer)",
)
def test_shipped_overlays_follow_the_plan() -> None:
    loaded = load_catalog(CATALOG)
    for overlay in ("dev", "staging", "prod"):
        steps = plan_overlay(loaded, overlay)  # raises if any sync-wave disagrees with the plan
        waves = {w.number: {*w.infrastructure, *w.services} for w in loaded.plan.waves}
        for step in steps:
            if step.wave in waves:
                assert set(step.services) <= waves[step.wave]
        assert {s for step in steps for s in step.services} >= set(loaded.catalog.services)
