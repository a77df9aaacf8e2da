"""`nexus deploy` and `nexus cluster-status` through the real CLI against a real HTTP peer.

The peer is tests/apiserver.py, on loopback; the kubernetes client talks to it as to any API
server. Error paths: no kubeconfig, an unknown context, a closed port, 401 and 403 each give
one line on stderr and exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from apiserver import FakeApiServer, kubeconfig
from cli import app
from conftest import MINIMAL, ROOT, dump
from generator.catalog import load_catalog
from overlays import write_overlay

pytestmark = pytest.mark.usefixtures("kubectl")  # it builds the overlays (`kubectl kustomize`)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The minimal catalog (auth in wave 2; gateway and media in wave 3) with a dev overlay."""
    (tmp_path / "catalog.yaml").write_text(dump(MINIMAL))
    write_overlay(tmp_path, load_catalog(tmp_path / "catalog.yaml"))
    return tmp_path


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


def run(project: Path, kubeconfig_path: Path | str, *args: str):
    argv = [args[0], "--catalog", str(project / "catalog.yaml"), *args[1:]]
    return CliRunner().invoke(app, argv, env={"KUBECONFIG": str(kubeconfig_path)})


def one_error_line(result) -> str:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# --- errors -------------------------------------------------------------------------------------


def test_no_kubeconfig(project: Path) -> None:
    line = one_error_line(run(project, project / "absent", "deploy", "--overlay", "dev"))
    assert line == (
        f"error: no kubeconfig (KUBECONFIG={project / 'absent'}): create a cluster (`kind create cluster --name nexus`) "
        "or point KUBECONFIG at one; `--dry-run=client` needs no cluster"
    )


def test_unknown_context(project: Path) -> None:
    path = project / "kubeconfig"
    path.write_text(kubeconfig("https://127.0.0.1:6443", "kind-nexus"))
    line = one_error_line(run(project, path, "deploy", "--overlay", "dev", "--context", "kind-prod"))
    assert line == (
        f'error: context "kind-prod" is not in kubeconfig {path} (it has: kind-nexus); '
        "pass one of those with --context (`kubectl config get-contexts` lists them)"
    )


def test_unreachable_api_server(project: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listened, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = project / "kubeconfig"
    path.write_text(kubeconfig(f"https://127.0.0.1:{port}", "kind-nexus"))
    for command in (["deploy", "--overlay", "dev"], ["cluster-status"]):
        line = one_error_line(run(project, path, *command))
        assert line == (
            f'error: cannot reach the API server of context "kind-nexus" at https://127.0.0.1:{port} (connection refused); '
            "is the cluster running? (`kubectl --context kind-nexus cluster-info`; kind: `kind get clusters`)"
        )


def test_forbidden_names_the_verb_and_the_check(project: Path, tmp_path: Path) -> None:
    with FakeApiServer(forbid=True) as api:
        line = one_error_line(run(project, api.kubeconfig(tmp_path / "kc"), "deploy", "--overlay", "dev"))
        assert line == (
            'error: forbidden in context "fake": namespaces "demo" is forbidden: User "dev" cannot patch resource "namespaces" '
            'in API group "" at the cluster scope; ask for a Role or ClusterRole that allows it (check: `kubectl --context fake auth can-i patch namespaces`)'
        )
        assert api.store == {}
        line = one_error_line(run(project, api.kubeconfig(tmp_path / "kc"), "cluster-status"))
        assert "cannot list resource \"deployments\" in API group \"apps\"" in line and "auth can-i list deployments.apps -n demo" in line


def test_rejected_credentials(project: Path, tmp_path: Path) -> None:
    with FakeApiServer(unauthorized=True) as api:
        line = one_error_line(run(project, api.kubeconfig(tmp_path / "kc"), "deploy", "--overlay", "dev"))
    assert line == (
        'error: the API server of context "fake" rejected its credentials (401 Unauthorized); '
        "refresh them (kind: `kind export kubeconfig --name <cluster>`) and retry"
    )


# --- deploy -------------------------------------------------------------------------------------

ORDER = [
    "namespaces/demo",
    "networkpolicies/default-deny",
    "networkpolicies/postgres-ingress",
    *(f"{p}/{n}" for p, n in [("networkpolicies", "auth"), ("serviceaccounts", "auth"), ("configmaps", "auth-config"), ("services", "auth"),
                              ("deployments", "auth"), ("horizontalpodautoscalers", "auth"), ("poddisruptionbudgets", "auth")]),
]


def applied_refs(api: FakeApiServer) -> list[str]:
    return ["/".join(r.path.split("/")[-2:]) for r in api.applies()]


def test_deploy_applies_wave_by_wave_with_server_side_apply(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    result = run(project, api.kubeconfig(tmp_path / "kc"), "deploy", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    refs = applied_refs(api)
    assert refs[: len(ORDER)] == ORDER
    wave3 = refs[len(ORDER) :]
    assert [r for r in wave3 if r.startswith("deployments/")] == ["deployments/gateway", "deployments/media"]
    assert len(wave3) == 14
    assert all(r.content_type == "application/apply-patch+yaml" and r.query == {"fieldManager": "nexus", "force": "true"} for r in api.applies())
    # the wave-3 objects were sent only after auth's rollout was read as available
    first_wave3 = next(i for i, r in enumerate(api.requests) if r.method == "PATCH" and r.path.endswith("/networkpolicies/gateway"))
    assert any(r.method == "GET" and r.path.endswith("/deployments") for r in api.requests[:first_wave3])
    out = result.stdout.splitlines()
    assert out[0] == f"context fake ({api.url}), server v1.32.0-fake: 24 objects in 5 steps"
    assert out[1:] == [
        "setup  applied 1 object",
        "wave  0  applied 1 object",
        "wave  1  applied 1 object (postgres)",
        "wave  2  applied 7 objects (auth)",
        "wave  2  auth: 1/1 available",
        "wave  3  applied 14 objects (gateway, media)",
        "wave  3  gateway: 1/1 available",
        "wave  3  media: 1/1 available",
        "done: 24 objects applied, 3 Deployments available",
    ]


def test_server_dry_run_sends_everything_with_dry_run_and_changes_nothing(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    kc = api.kubeconfig(tmp_path / "kc")
    line = one_error_line(run(project, kc, "deploy", "--overlay", "dev", "--dry-run", "server"))
    assert line == (
        'error: namespace "demo" does not exist in context "fake", and a server dry run cannot create it: '
        "create it first (`kubectl --context fake create namespace demo`) or deploy for real"
    )
    api.store[("v1", "namespaces", "", "demo")] = namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    result = run(project, kc, "deploy", "--overlay", "dev", "--dry-run", "server")
    assert result.exit_code == 0, result.output
    assert len(api.applies()) == 24 and all(r.query.get("dryRun") == "All" for r in api.applies())
    assert api.store == {("v1", "namespaces", "", "demo"): namespace}
    assert result.stdout.splitlines()[-1] == "done: 24 objects validated by the server (dry run), nothing changed"


def test_a_stuck_rollout_stops_and_shows_the_pods(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    api.rollout["auth"] = "stuck"
    api.pods.append({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "auth-5d9-x2", "namespace": "demo", "labels": {"app.kubernetes.io/name": "auth"}},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "auth", "image": "x", "imageID": "", "ready": False, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
        }]},
    })
    api.events.append({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "ev1", "namespace": "demo"},
        "involvedObject": {"kind": "Pod", "name": "auth-5d9-x2"}, "reason": "BackOff", "type": "Warning", "count": 9,
        "message": "Back-off restarting failed container auth", "lastTimestamp": "2025-01-01T00:00:00Z",
    })
    result = run(project, api.kubeconfig(tmp_path / "kc"), "deploy", "--overlay", "dev")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error:",
        "wave 2 failed: auth; waves after it were not applied",
        'auth: exceeded its progress deadline: ReplicaSet "auth-5d9" has timed out progressing.',
        "  pod auth-5d9-x2: Running",
        "    container auth: waiting: CrashLoopBackOff (back-off 40s restarting failed container); last exit 3 (Error), 4 restarts",
        "    event Warning BackOff x9: Back-off restarting failed container auth",
    ]
    assert not any("gateway" in r for r in applied_refs(api))


def test_a_slow_rollout_times_out(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    api.rollout["auth"] = "progressing"
    result = run(project, api.kubeconfig(tmp_path / "kc"), "deploy", "--overlay", "dev", "--timeout-per-wave", "0")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[1:3] == [
        "wave 2 did not roll out within 0 s: auth; waves after it were not applied",
        "auth: 0 of 1 updated replicas available",
    ]


def test_wave_and_only_select(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    kc = api.kubeconfig(tmp_path / "kc")
    assert run(project, kc, "deploy", "--overlay", "dev", "--wave", "3", "--only", "media").exit_code == 0
    assert applied_refs(api) == ["namespaces/demo"] + [
        f"{p}/{n}" for p, n in [("networkpolicies", "media"), ("serviceaccounts", "media"), ("configmaps", "media-config"), ("services", "media"),
                                ("deployments", "media"), ("horizontalpodautoscalers", "media"), ("poddisruptionbudgets", "media")]
    ]


def test_objects_no_longer_generated_are_reported_then_pruned(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    kc = api.kubeconfig(tmp_path / "kc")
    assert run(project, kc, "deploy", "--overlay", "dev").exit_code == 0
    catalog = dict(MINIMAL, services={k: v for k, v in MINIMAL["services"].items() if k != "media"})
    catalog["platform"] = {**MINIMAL["platform"]}
    catalog["services"]["gateway"] = {**catalog["services"]["gateway"], "depends_on": {"auth": "hard"}}
    catalog["flows"] = {"login": MINIMAL["flows"]["login"]}
    (project / "catalog.yaml").write_text(dump(catalog))
    shutil.rmtree(project / "generated")
    write_overlay(project, load_catalog(project / "catalog.yaml"))

    result = run(project, kc, "deploy", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    tail = result.stdout.splitlines()[-9:]
    assert tail[0] == "7 objects applied by nexus earlier are not in the overlay any more (run with --prune to delete):"
    assert tail[1:8] == [f"    {k}/{n} (media)" for k, n in [
        ("NetworkPolicy", "media"), ("ServiceAccount", "media"), ("ConfigMap", "media-config"), ("Service", "media"),
        ("Deployment", "media"), ("HorizontalPodAutoscaler", "media"), ("PodDisruptionBudget", "media")]]
    assert api.live("Deployment", "media") is not None and not [r for r in api.requests if r.method == "DELETE"]
    status = run(project, kc, "cluster-status", "--overlay", "dev")
    assert "not in the overlay any more (nexus deploy --prune deletes it): Deployment/media (media)" in status.stdout.splitlines()

    result = run(project, kc, "deploy", "--overlay", "dev", "--prune")
    assert result.exit_code == 0, result.output
    assert "7 objects applied by nexus earlier are pruned:" in result.stdout
    assert len([r for r in api.requests if r.method == "DELETE"]) == 7
    assert api.live("Deployment", "media") is None and api.live("Namespace", "demo") is not None


def test_cluster_status_shows_replicas_rollout_and_drift(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    kc = api.kubeconfig(tmp_path / "kc")
    result = run(project, kc, "cluster-status")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2:] == [
        "auth        2        -      -  missing      -",
        "gateway     3        -      -  missing      -",
        "media       3        -      -  missing      -",
    ]
    result = run(project, kc, "cluster-status", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2] == "auth        2        -      -  missing      not deployed"
    assert "drift outside the services: Namespace/demo: missing" in result.stdout.splitlines()
    assert run(project, kc, "deploy", "--overlay", "dev").exit_code == 0
    live = api.live("Deployment", "media")
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/x:hotfix"  # someone's kubectl edit
    api.rollout["gateway"] = "progressing"
    result = run(project, kc, "cluster-status", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "context fake, namespace demo, compared with overlay dev",
        "SERVICE  WAVE  DESIRED  READY  ROLLOUT      DRIFT",
        "auth        2        1      1  available    none",
        "gateway     3        1      0  progressing  none",
        "media       3        1      1  available    Deployment/media: spec.template.spec.containers[0].image",
        "gateway: progressing: 0 of 1 updated replicas available",
    ]
    assert all(r.query.get("dryRun") == "All" for r in api.applies()[24:])


def test_ctrl_c_stops_after_the_current_apply(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    api.rollout["auth"] = "progressing"  # wave 2 waits until interrupted
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KUBECONFIG": str(api.kubeconfig(tmp_path / "kc"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "deploy", "--overlay", "dev", "--catalog", str(project / "catalog.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wave 2 is applied and being waited for
            if line.startswith("wave  2  applied"):
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines() == [
        "error: interrupted during wave 2: 10 of 24 objects were applied (the last: PodDisruptionBudget/auth); nothing more was sent. "
        "Run the same command again to go on: applying is idempotent."
    ]
    assert len(api.applies()) == 10


REAL = pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to deploy to (kind create cluster; see docs/deploy.md)")


@pytest.fixture
def real_project(tmp_path: Path):
    """The minimal catalog in a namespace of its own, pods running the pause image; deleted after."""
    from kubernetes import client

    from generator.cluster import connect

    cluster = connect()
    try:
        cluster.check()
    except Exception as exc:  # noqa: BLE001 - any reason the cluster cannot be used is a reason to skip
        pytest.skip(f"KUBECONFIG points at no usable cluster: {exc}")
    namespace = f"nexus-test-{os.getpid()}"
    (tmp_path / "catalog.yaml").write_text(dump({**MINIMAL, "platform": {**MINIMAL["platform"], "namespace": namespace}}))
    write_overlay(tmp_path, load_catalog(tmp_path / "catalog.yaml"), image="registry.k8s.io/pause:3.10")
    yield tmp_path
    client.CoreV1Api(cluster.api).delete_namespace(namespace)


@pytest.mark.cluster
@REAL
def test_server_dry_run_on_a_real_cluster(real_project: Path) -> None:
    """The whole overlay passes the server's validation, and nothing is created."""
    from kubernetes import client

    from generator.cluster import connect

    args = ["deploy", "--catalog", str(real_project / "catalog.yaml"), "--overlay", "dev", "--dry-run", "server"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "a server dry run cannot create it" in result.stderr, result.output
    namespace = load_catalog(real_project / "catalog.yaml").catalog.platform.namespace
    cluster = connect()
    client.CoreV1Api(cluster.api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items == []


@pytest.mark.cluster
@REAL
def test_deploy_and_status_on_a_real_cluster(real_project: Path) -> None:
    """Deploy for real, wave by wave, then find every service available and nothing drifted."""
    catalog = str(real_project / "catalog.yaml")
    result = CliRunner().invoke(app, ["deploy", "--catalog", catalog, "--overlay", "dev", "--timeout-per-wave", "180"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "done: 24 objects applied, 3 Deployments available"
    result = CliRunner().invoke(app, ["cluster-status", "--catalog", catalog, "--overlay", "dev", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert [(s["name"], s["rollout"], s["drift"]) for s in status["services"]] == [("auth", "available", []), ("gateway", "available", []), ("media", "available", [])]
    assert status["orphans"] == [] and status["shared_drift"] == []


def test_a_kind_the_cluster_does_not_serve_is_one_line(project: Path, api: FakeApiServer, tmp_path: Path) -> None:
    base = project / "generated/k8s/base"
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "auth", "annotations": {"argocd.argoproj.io/sync-wave": "2"}}}
    (base / "monitor.yaml").write_text(dump(monitor))
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    (base / "kustomization.yaml").write_text(dump({**kustomization, "resources": [*kustomization["resources"], "monitor.yaml"]}))
    line = one_error_line(run(project, api.kubeconfig(tmp_path / "kc"), "deploy", "--overlay", "dev"))
    assert line == (
        'error: the API server of context "fake" does not serve ServiceMonitor in monitoring.coreos.com/v1; '
        "install its CustomResourceDefinition, or use a cluster that has that API version"
    )
    assert api.applies() == []  # every kind is looked up before the first apply
