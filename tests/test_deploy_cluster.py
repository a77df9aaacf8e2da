"""`nexus deploy` and `nexus cluster-status` through the real CLI against a real Kubernetes API server.

The cluster is the testbed (tests/testbed.py: a kube-apiserver, controller-manager and scheduler
on loopback, found running or started for the session). Each test has a namespace of its own,
deleted and waited for after. The order of what was applied is the server's own: the
etcd revisions that watches report (tests/testbed.py's Recorder). Three error paths need no
server at all (no kubeconfig, an unknown context, a closed port) and run everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, MINIMAL, ROOT, dump
from overlays import write_overlay
from testbed import (
    Recorder,
    Testbed,
    delete_namespace,
    provide_volumes,
    remove_volumes,
    unavailable,
    unique_namespace,
)
from typer.testing import CliRunner

from nexus.catalog import load_catalog
from nexus.cli import app
from nexus.cluster.deploy import PRUNABLE, plan_overlay
from nexus.pipeline import generate

pytestmark = pytest.mark.usefixtures("kubectl")  # it builds the overlays (`kubectl kustomize`)
PAUSE = "registry.k8s.io/pause:3.10"  # nothing pulls it on the testbed; on a real cluster it is the smallest image


def run(project: Path, kubeconfig: Path | str, *args: str):
    argv = [args[0], "--catalog", str(project / "catalog.yaml"), *args[1:]]
    return CliRunner().invoke(app, argv, env={"KUBECONFIG": str(kubeconfig)})


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def kubeconfig_text(server: str, context: str = "kind-nexus") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": context,
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
        }
    )


# --- errors that need no server ------------------------------------------------------------------


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    (tmp_path / "catalog.yaml").write_text(dump(MINIMAL))
    write_overlay(tmp_path, load_catalog(tmp_path / "catalog.yaml"))
    return tmp_path


def test_no_kubeconfig(offline: Path) -> None:
    line = one_error_line(run(offline, offline / "absent", "deploy", "--overlay", "dev"))
    assert line == (
        f"error: no kubeconfig (KUBECONFIG={offline / 'absent'}): create a cluster (`kind create cluster --name "
        "nexus`) "
        "or point KUBECONFIG at one; `--dry-run=client` needs no cluster"
    )


def test_unknown_context(offline: Path) -> None:
    path = offline / "kubeconfig"
    path.write_text(kubeconfig_text("https://127.0.0.1:6443"))
    line = one_error_line(run(offline, path, "deploy", "--overlay", "dev", "--context", "kind-prod"))
    assert line == (
        f'error: context "kind-prod" is not in kubeconfig {path} (it has: kind-nexus); '
        "pass one of those with --context (`kubectl config get-contexts` lists them)"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[1, 2\n", "cannot be read: not YAML: expected ',' or ']', but got '<stream end>' at line 2, column 1"),
        ("- a\n- b\n", "cannot be read: YAML, but not the mapping of clusters, contexts and users a kubeconfig is"),
        (
            "current-context: c\ncontexts: [{name: c, context: x}]\nclusters: []\nusers: []\n",
            "cannot be read: YAML, but not the mapping of clusters, contexts and users a kubeconfig is",
        ),
    ],
    ids=["not-yaml", "a-list", "a-context-that-is-text"],
)
def test_a_kubeconfig_that_is_not_one_is_one_line(offline: Path, text: str, why: str) -> None:
    """PyYAML's error, or the client's TypeError on YAML of another shape, was a traceback."""
    path = offline / "kubeconfig"
    path.write_text(text, encoding="utf-8")
    for command in (["deploy", "--overlay", "dev"], ["cluster-status"]):
        line = one_error_line(run(offline, path, *command))
        assert line == f"error: kubeconfig {path} {why}; fix it or regenerate it (`kind export kubeconfig`)", line


def test_unreachable_api_server(offline: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listened, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = offline / "kubeconfig"
    path.write_text(kubeconfig_text(f"https://127.0.0.1:{port}"))
    for command in (["deploy", "--overlay", "dev"], ["cluster-status"]):
        line = one_error_line(run(offline, path, *command))
        assert line == (
            f'error: cannot reach the API server of context "kind-nexus" at https://127.0.0.1:{port} (connection '
            "refused); "
            "is the cluster running? (`kubectl --context kind-nexus cluster-info`; kind: `kind get clusters`)"
        )


# --- on the testbed ------------------------------------------------------------------------------


@pytest.fixture
def api(testbed: Testbed) -> Any:
    from kubernetes import config

    return config.new_client_from_config(config_file=testbed.kubeconfig, persist_config=False)


@pytest.fixture
def namespace(api: Any) -> Any:
    """A namespace name of this test's own; deleted after, and waited for."""
    name = unique_namespace()
    volumes = provide_volumes(api, name)  # for the StatefulSets' claims: the testbed has no provisioner
    yield name
    delete_namespace(api, name)
    remove_volumes(api, volumes)


def minimal_project(root: Path, namespace: str, **overlay: Any) -> Path:
    """The minimal catalog (postgres wave 1, auth wave 2, gateway and media wave 3) in ``namespace``."""
    data = {**MINIMAL, "platform": {**MINIMAL["platform"], "namespace": namespace}}
    (root / "catalog.yaml").write_text(dump(data))
    write_overlay(root, load_catalog(root / "catalog.yaml"), image=PAUSE, **overlay)
    return root


@pytest.fixture
def project(tmp_path: Path, namespace: str) -> Path:
    return minimal_project(tmp_path, namespace)


def context_of(testbed: Testbed) -> str:
    return str(yaml.safe_load(Path(testbed.kubeconfig).read_text())["current-context"])


def server_of(testbed: Testbed) -> str:
    return str(yaml.safe_load(Path(testbed.kubeconfig).read_text())["clusters"][0]["cluster"]["server"])


def kubeconfig_as(testbed: Testbed, path: Path, token: str | None = None, ca: Path | None = None) -> Path:
    """The testbed's kubeconfig with another user's token and/or another CA."""
    data = yaml.safe_load(Path(testbed.kubeconfig).read_text())
    if token is not None:
        data["users"][0]["user"] = {"token": token}
    if ca is not None:
        data["clusters"][0]["cluster"]["certificate-authority"] = str(ca)
    path.write_text(yaml.safe_dump(data))
    return path


def service_account_token(api: Any, namespace: str, name: str, cluster_role: str | None = None) -> str:
    """A ServiceAccount's token (the token controller's Secret, as Kubernetes 1.20 makes it);
    with ``cluster_role``, bound to it in ``namespace`` only."""
    import base64

    from kubernetes import client

    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    if not _exists(lambda: core.read_namespace(namespace)):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    if cluster_role:
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"{name}-{cluster_role}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
    for _ in range(100):
        secrets = core.read_namespaced_service_account(name, namespace).secrets or []
        if secrets:
            return base64.b64decode(core.read_namespaced_secret(secrets[0].name, namespace).data["token"]).decode()
        time.sleep(0.2)
    raise AssertionError(f"no token for ServiceAccount {namespace}/{name}")


def _exists(read: Any) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def managed(api: Any, namespace: str) -> set[str]:
    """Kind/name of every object labelled as Nexus's in the namespace, of the kinds deploy prunes."""
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(api)
    return {
        f"{kind}/{item['metadata']['name']}"
        for api_version, kind in PRUNABLE
        for item in dyn.resources.get(api_version=api_version, kind=kind)
        .get(namespace=namespace, label_selector="app.kubernetes.io/managed-by=nexus")
        .to_dict()["items"]
    }


def versions(api: Any, namespace: str) -> dict[str, str]:
    """resourceVersion of every managed object that has no status a controller writes."""
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(api)
    quiet = [k for k in PRUNABLE if k[1] in ("ServiceAccount", "ConfigMap", "Service", "NetworkPolicy")]
    return {
        f"{kind}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
        for api_version, kind in quiet
        for item in dyn.resources.get(api_version=api_version, kind=kind)
        .get(namespace=namespace, label_selector="app.kubernetes.io/managed-by=nexus")
        .to_dict()["items"]
    }


KINDS = [("v1", "Namespace"), *PRUNABLE]


def assert_wave_by_wave(rec: Recorder, steps: list[Any]) -> None:
    """Created in exactly the plan's order, and no wave's first object before the previous
    wave's Deployments were all available: both in the server's own order (etcd revisions)."""
    expected = [o.ref for s in steps for o in s.objects]
    rec.wait_for(len(expected))
    assert rec.created() == expected
    for before, after in itertools.pairwise(steps):
        deployments = [o.name for o in before.objects if o.kind == "Deployment"]
        if deployments:
            ready = max(rec.revision_available(d) for d in deployments)
            assert ready < rec.revision_created(after.objects[0].ref), (
                f"{after.name} started before {before.name} was available"
            )


@pytest.mark.cluster
def test_rejected_credentials(testbed: Testbed, project: Path, tmp_path: Path) -> None:
    kc = kubeconfig_as(testbed, tmp_path / "kc", token="not-a-token")
    line = one_error_line(run(project, kc, "deploy", "--overlay", "dev"))
    assert line == (
        f'error: the API server of context "{context_of(testbed)}" rejected its credentials (401 Unauthorized); '
        "refresh them (kind: `kind export kubeconfig --name <cluster>`) and retry"
    )


@pytest.mark.cluster
def test_a_certificate_the_kubeconfig_does_not_trust_is_not_called_unreachable(
    testbed: Testbed, project: Path, tmp_path: Path
) -> None:
    ca = tmp_path / "other-ca.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tmp_path / "other-ca.key"),
            "-out",
            str(ca),
            "-days",
            "1",
            "-subj",
            "/CN=other-ca",
        ],
        check=True,
        capture_output=True,
    )
    kc = kubeconfig_as(testbed, tmp_path / "kc", ca=ca)
    for command in (["deploy", "--overlay", "dev"], ["cluster-status"]):
        line = one_error_line(run(project, kc, *command))
        assert line.startswith(f'error: the API server of context "{context_of(testbed)}" at https://127.0.0.1:')
        assert (
            "certificate verify failed" in line
            and "the kubeconfig's certificate-authority does not match the server's certificate" in line
        )
        assert "is the cluster running" not in line


@pytest.mark.cluster
def test_forbidden_names_the_verb_and_the_check(
    testbed: Testbed, api: Any, project: Path, namespace: str, tmp_path: Path
) -> None:
    """A user with no rights at all: RBAC's 403, with the `kubectl auth can-i` line; nothing applied."""
    token = service_account_token(api, namespace, "nobody")
    kc = kubeconfig_as(testbed, tmp_path / "kc", token=token)
    ctx = context_of(testbed)
    line = one_error_line(run(project, kc, "deploy", "--overlay", "dev"))
    assert line == (
        f'error: forbidden in context "{ctx}": namespaces "{namespace}" is forbidden: User '
        f'"system:serviceaccount:{namespace}:nobody" '
        f'cannot patch resource "namespaces" in API group "" in the namespace "{namespace}"; ask for a Role or '
        "ClusterRole that allows it "
        f"(check: `kubectl --context {ctx} auth can-i patch namespaces`)"
    )
    line = one_error_line(run(project, kc, "cluster-status"))
    assert (
        'cannot list resource "deployments" in API group "apps"' in line
        and f"auth can-i list deployments.apps -n {namespace}" in line
    )
    assert managed(api, namespace) == set()


@pytest.mark.cluster
def test_a_namespace_being_deleted_is_not_called_an_rbac_problem(
    testbed: Testbed, api: Any, project: Path, namespace: str
) -> None:
    """NamespaceLifecycle's 403 says to wait for the namespace, not to ask for a Role."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    hold = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="hold", finalizers=["nexus.dev/test-hold"])
    )  # keeps it terminating
    core.create_namespaced_config_map(namespace, hold)
    core.delete_namespace(namespace)
    try:
        line = one_error_line(run(project, testbed.kubeconfig, "deploy", "--overlay", "dev"))
    finally:
        core.patch_namespaced_config_map("hold", namespace, {"metadata": {"finalizers": None}})
    ctx = context_of(testbed)
    assert line.startswith(
        f'error: namespace "{namespace}" in context "{ctx}" is being deleted, so nothing can be created in it ('
    )
    assert "because it is being terminated" in line and "ask for a Role" not in line
    assert line.endswith(
        f"wait until it is gone (`kubectl --context {ctx} wait --for=delete namespace/{namespace} --timeout=120s`) "
        "and run again"
    )


@pytest.mark.cluster
def test_deploy_goes_wave_by_wave_in_the_plan_order_then_a_redeploy_changes_nothing(
    testbed: Testbed, api: Any, project: Path, namespace: str
) -> None:
    loaded = load_catalog(project / "catalog.yaml")
    steps = plan_overlay(loaded, "dev")
    with Recorder(api, namespace, KINDS) as rec:
        result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--timeout-per-wave", "120")
        assert result.exit_code == 0, result.output
        assert_wave_by_wave(rec, steps)
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"context {context_of(testbed)} ({server_of(testbed)}), server v") and first.endswith(
        ": 24 objects in 5 steps"
    )
    lines = result.stdout.splitlines()[1:]
    # a wave's Deployments are reported as each becomes available: gateway and media in either order
    lines[6:8] = sorted(lines[6:8])
    assert lines == [
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
    # server-side apply by field manager nexus
    from kubernetes import client

    dep = client.AppsV1Api(api).read_namespaced_deployment("auth", namespace)
    assert [(m.manager, m.operation) for m in dep.metadata.managed_fields if m.manager == "nexus"] == [
        ("nexus", "Apply")
    ]

    before, generations = (
        versions(api, namespace),
        {
            d.metadata.name: d.metadata.generation
            for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items
        },
    )
    again = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev")
    assert again.exit_code == 0, again.output
    assert versions(api, namespace) == before and len(before) == 14  # nothing written again
    assert {
        d.metadata.name: d.metadata.generation
        for d in client.AppsV1Api(api).list_namespaced_deployment(namespace).items
    } == generations


@pytest.mark.cluster
def test_wave_and_only_select(testbed: Testbed, api: Any, project: Path, namespace: str) -> None:
    result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--wave", "3", "--only", "media")
    assert result.exit_code == 0, result.output
    assert managed(api, namespace) == {
        f"{k}/{n}"
        for k, n in [
            ("NetworkPolicy", "media"),
            ("ServiceAccount", "media"),
            ("ConfigMap", "media-config"),
            ("Service", "media"),
            ("Deployment", "media"),
            ("HorizontalPodAutoscaler", "media"),
            ("PodDisruptionBudget", "media"),
        ]
    }


@pytest.mark.cluster
def test_server_dry_run_needs_the_namespace_and_changes_nothing(
    testbed: Testbed, api: Any, project: Path, namespace: str
) -> None:
    from kubernetes import client

    ctx = context_of(testbed)
    line = one_error_line(run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--dry-run", "server"))
    assert line == (
        f'error: namespace "{namespace}" does not exist in context "{ctx}", and a server dry run cannot create it: '
        f"create it first (`kubectl --context {ctx} create namespace {namespace}`) or deploy for real"
    )
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--dry-run", "server")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "done: 24 objects validated by the server (dry run), nothing changed"
    assert managed(api, namespace) == set()


@pytest.mark.cluster
def test_a_crash_looping_service_stops_the_deploy_at_its_wave(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    if not testbed.fail_image:
        unavailable(
            "the cluster has no kubelet stand-in that crash-loops an image (TESTBED_FAIL_IMAGE): start the testbed "
            "with scripts/testbed.sh"
        )
    project = minimal_project(tmp_path, namespace, images={"auth": f"registry.example.com/{testbed.fail_image}:1"})
    result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--timeout-per-wave", "8")
    assert result.exit_code == 1
    err = result.stderr.splitlines()
    assert err[:3] == [
        "error:",
        "wave 2 did not roll out within 8 s: auth; waves after it were not applied",
        "auth: 0 of 1 updated replicas available",
    ]
    assert err[3].startswith("  pod auth-") and err[3].endswith(": Running")
    assert err[4].startswith(
        "    container auth: waiting: CrashLoopBackOff (back-off 1m20s restarting failed container=auth pod=auth-"
    )
    assert err[4].endswith("); last exit 1 (Error), 4 restarts")
    assert any(
        line.startswith("    event Warning BackOff x4: Back-off restarting failed container in pod auth-")
        for line in err
    )
    assert {r.split("/")[1] for r in managed(api, namespace) if r.startswith("Deployment/")} == {
        "auth"
    }  # wave 3 never sent

    # a kubelet that posts the same event twice: one line, the counts added
    from kubernetes import client

    core = client.CoreV1Api(api)
    pod = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=auth").items[0]
    backoff = next(
        e
        for e in core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod.metadata.name}").items
        if e.reason == "BackOff"
    )
    backoff.metadata = client.V1ObjectMeta(generate_name=f"{pod.metadata.name}.", namespace=namespace)
    backoff.count = 1
    core.create_namespaced_event(namespace, backoff)
    again = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--wave", "2", "--timeout-per-wave", "0")
    events = [line for line in again.stderr.splitlines() if "event Warning BackOff" in line]
    assert len(events) == 1 and events[0].startswith("    event Warning BackOff x5: "), again.stderr


@pytest.mark.cluster
def test_ctrl_c_stops_a_real_deploy_after_the_current_apply(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    """SIGINT to a `nexus deploy` process waiting on wave 2: exit 130, what was applied, nothing after."""
    if not testbed.fail_image:
        unavailable(
            "the cluster has no kubelet stand-in that crash-loops an image (TESTBED_FAIL_IMAGE), to keep wave 2 waiting"
        )
    project = minimal_project(tmp_path, namespace, images={"auth": f"registry.example.com/{testbed.fail_image}:1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "deploy", "--overlay", "dev", "--catalog", str(project / "catalog.yaml")],
        cwd=ROOT,
        env={**testbed.env(), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wave 2 is applied and being waited for
            if line.startswith("wave  2  applied"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines() == [
        (
            "error: interrupted during wave 2: 10 of 24 objects were applied (the last: PodDisruptionBudget/auth); "
            "nothing more was sent. "
            "Run the same command again to go on: applying is idempotent."
        )
    ]
    # the 9 namespaced objects of the setup step and waves 0 to 2 (the 10th is the Namespace), none of wave 3
    assert len(managed(api, namespace)) == 9
    assert not any(r.endswith(("/gateway", "/media")) for r in managed(api, namespace))


@pytest.mark.cluster
def test_a_removed_service_is_listed_then_pruned_exactly(
    testbed: Testbed, api: Any, project: Path, namespace: str
) -> None:
    kc = testbed.kubeconfig
    assert run(project, kc, "deploy", "--overlay", "dev").exit_code == 0
    before = managed(api, namespace)
    catalog = dict(MINIMAL, services={k: v for k, v in MINIMAL["services"].items() if k != "media"})
    catalog["platform"] = {**MINIMAL["platform"], "namespace": namespace}
    catalog["services"]["gateway"] = {**catalog["services"]["gateway"], "depends_on": {"auth": "hard"}}
    catalog["flows"] = {"login": MINIMAL["flows"]["login"]}
    (project / "catalog.yaml").write_text(dump(catalog))
    shutil.rmtree(project / "generated")
    write_overlay(project, load_catalog(project / "catalog.yaml"), image=PAUSE)
    media = [
        ("NetworkPolicy", "media"),
        ("ServiceAccount", "media"),
        ("ConfigMap", "media-config"),
        ("Service", "media"),
        ("Deployment", "media"),
        ("HorizontalPodAutoscaler", "media"),
        ("PodDisruptionBudget", "media"),
    ]

    result = run(project, kc, "deploy", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    tail = result.stdout.splitlines()[-9:]
    assert tail[0] == "7 objects applied by nexus earlier are not in the overlay any more (run with --prune to delete):"
    assert tail[1:8] == [f"    {k}/{n} (media)" for k, n in media]
    status = run(project, kc, "cluster-status", "--overlay", "dev")
    assert (
        "not in the overlay any more (nexus deploy --prune deletes it): Deployment/media (media)"
        in status.stdout.splitlines()
    )

    dry = run(project, kc, "deploy", "--overlay", "dev", "--prune", "--dry-run", "server")
    assert dry.exit_code == 0, dry.output
    assert (
        "7 objects applied by nexus earlier would be pruned (server dry run: nothing was deleted):"
        in dry.stdout.splitlines()
    )
    assert managed(api, namespace) == before

    result = run(project, kc, "deploy", "--overlay", "dev", "--prune")
    assert result.exit_code == 0, result.output
    assert "7 objects applied by nexus earlier were pruned:" in result.stdout.splitlines()
    assert before - managed(api, namespace) == {f"{k}/{n}" for k, n in media}  # exactly its objects
    assert managed(api, namespace) == before - {f"{k}/{n}" for k, n in media}


@pytest.mark.cluster
def test_drift_after_kubectl_edits_is_reported_field_by_field_and_undone(
    testbed: Testbed, project: Path, namespace: str
) -> None:
    kc = testbed.kubeconfig
    result = run(project, kc, "cluster-status")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2:] == [
        "auth        2        -      -  missing      -",
        "gateway     3        -      -  missing      -",
        "media       3        -      -  missing      -",
    ]
    assert run(project, kc, "deploy", "--overlay", "dev").exit_code == 0
    kubectl = ["kubectl", "--kubeconfig", kc, "-n", namespace]
    subprocess.run(
        [*kubectl, "set", "image", "deployment/media", "media=registry.example.com/x:hotfix"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*kubectl, "patch", "configmap", "media-config", "--type=merge", "-p", '{"data":{"SERVICE_NAME":"other"}}'],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*kubectl, "patch", "hpa", "media", "--type=merge", "-p", '{"spec":{"maxReplicas":5}}'],
        check=True,
        capture_output=True,
    )
    result = run(project, kc, "cluster-status", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"context {context_of(testbed)}, namespace {namespace}, compared with overlay dev",
        "SERVICE  WAVE  DESIRED  READY  ROLLOUT      DRIFT",
        "auth        2        1      1  available    none",
    ]
    assert lines[4].startswith("media       3        1")
    status = json.loads(run(project, kc, "cluster-status", "--overlay", "dev", "--json").stdout)
    assert status["services"][2]["drift"] == [
        "ConfigMap/media-config: data.SERVICE_NAME",
        "Deployment/media: spec.template.spec.containers[0].image",
        "HorizontalPodAutoscaler/media: spec.maxReplicas",
    ]
    assert run(project, kc, "deploy", "--overlay", "dev").exit_code == 0  # takes its fields back
    status = json.loads(run(project, kc, "cluster-status", "--overlay", "dev", "--json").stdout)
    assert [(s["name"], s["rollout"], s["drift"]) for s in status["services"]] == [
        ("auth", "available", []),
        ("gateway", "available", []),
        ("media", "available", []),
    ]
    assert status["orphans"] == [] and status["shared_drift"] == [] and status["drift_unchecked"] == []


@pytest.mark.cluster
def test_cluster_status_with_read_only_view_rights(
    testbed: Testbed, api: Any, project: Path, namespace: str, tmp_path: Path
) -> None:
    """`view` may get and list, not patch: replicas and rollout are shown, drift is said to be unchecked and why."""
    assert run(project, testbed.kubeconfig, "deploy", "--overlay", "dev").exit_code == 0
    kc = kubeconfig_as(testbed, tmp_path / "kc", token=service_account_token(api, namespace, "viewer", "view"))
    result = run(project, kc, "cluster-status", "--overlay", "dev")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[2:5] == [
        "auth        2        1      1  available    not checked",
        "gateway     3        1      1  available    not checked",
        "media       3        1      1  available    not checked",
    ]
    assert lines[5] == (
        "not checked: drift of 8 kinds: may not patch ConfigMap, Deployment, HorizontalPodAutoscaler, Namespace, "
        "NetworkPolicy, "
        "PodDisruptionBudget, Service, ServiceAccount. Drift is found by reading each object and sending it as a "
        "server-side dry-run "
        f"apply, which needs get and patch (check: `kubectl --context {context_of(testbed)} auth can-i patch "
        f"deployments.apps -n {namespace}`); "
        "replicas, rollout and leftovers need only get and list"
    )
    assert len(lines) == 6


@pytest.mark.cluster
def test_done_only_when_the_hpa_minimum_is_available(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    """A new Deployment starts at 1 replica; its HPA's minimum (2) is what `done` waits for."""
    from kubernetes import client

    project = minimal_project(tmp_path, namespace, min_replicas=2)
    result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--wave", "2", "--timeout-per-wave", "120")
    assert result.exit_code == 0, result.output
    assert "wave  2  auth: 2/2 available" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "done: 8 objects applied, 1 Deployment available"
    assert client.AppsV1Api(api).read_namespaced_deployment("auth", namespace).status.available_replicas == 2


def test_the_scheduler_puts_a_generated_deployment_s_replicas_on_different_nodes(
    testbed: Testbed, api: Any, namespace: str
) -> None:
    """The generated Deployment as it is, at two replicas, on the testbed's two nodes and its
    real scheduler: one on each. Without its topologySpreadConstraints, the scheduler's defaults
    put both on one node in 5 of 7 runs here, where one lost node takes both."""
    from kubernetes import client

    from nexus.catalog import load_catalog_text
    from nexus.render import RenderContext, render

    loaded = load_catalog_text(dump(MINIMAL))
    text = render(RenderContext(loaded.catalog, loaded.plan))["k8s/base/services/media.yaml"]
    docs = {d["kind"]: d for d in yaml.safe_load_all(text) if d}
    deployment, account = docs["Deployment"], docs["ServiceAccount"]  # a pod's account must exist
    deployment["metadata"]["namespace"] = account["metadata"]["namespace"] = namespace
    deployment["spec"]["replicas"] = 2  # the HorizontalPodAutoscaler's minimum in prod
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    core.create_namespaced_service_account(namespace, account)
    client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment)

    def placed() -> list[str]:
        pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=media").items
        return sorted(p.spec.node_name for p in pods if p.spec.node_name)

    deadline = time.monotonic() + 60
    while len(placed()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    nodes = sorted(n.metadata.name for n in core.list_node().items)
    assert len(nodes) == 2 and placed() == nodes


# --- the shipped catalog, end to end -------------------------------------------------------------


def shipped(root: Path, namespace: str, *, bare: bool) -> Path:
    """The shipped catalog in ``namespace``, generated; ``bare``: no mesh, no Prometheus Operator."""
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    data["platform"]["namespace"] = namespace
    if bare:
        data["platform"]["mesh"] = "none"
        data["platform"].setdefault("monitoring", {})["operator"] = False
    (root / "catalog.yaml").write_text(dump(data), encoding="utf-8")
    generate(root / "catalog.yaml")
    return root


@pytest.mark.cluster
def test_the_shipped_dev_overlay_deploys_wave_by_wave_in_the_plan_order(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    """43 services in 16 waves, and stage 1's StatefulSets and Secrets, on core kinds only; then cluster-status
    finds all of them available, nothing drifted."""
    project = shipped(tmp_path, namespace, bare=True)
    steps = plan_overlay(load_catalog(project / "catalog.yaml"), "dev")
    with Recorder(api, namespace, KINDS) as rec:
        result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--timeout-per-wave", "120")
        assert result.exit_code == 0, result.output
        assert_wave_by_wave(rec, steps)
    out = result.stdout.splitlines()
    assert out[-1] == "done: 321 objects applied, 3 StatefulSets ready, 43 Deployments available"
    # stage 1: one Secret per server (its administrator) and per use, made just before wave 1
    uses = sum(len(s.uses) for s in load_catalog(project / "catalog.yaml").catalog.services.values())
    (made,) = [line for line in out if "created" in line]
    assert made.startswith(f"wave  1  created {3 + uses} Secrets with random passwords (nats, nats.")
    status = json.loads(run(project, testbed.kubeconfig, "cluster-status", "--overlay", "dev", "--json").stdout)
    assert len(status["services"]) == 43
    assert {(s["rollout"], tuple(s["drift"])) for s in status["services"]} == {("available", ())}
    assert status["orphans"] == [] and status["shared_drift"] == []


@pytest.mark.cluster
def test_the_full_overlay_names_every_missing_kind_then_deploys_with_install_crds(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    """Istio's and the Prometheus Operator's kinds: all 8 named in one message, nothing applied;
    with --install-crds (generated/k8s/crds, from our CRD schemas) the whole overlay deploys."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    project = shipped(tmp_path, namespace, bare=False)
    ext = client.ApiextensionsV1Api(api)
    for crd in ext.list_custom_resource_definition(label_selector="app.kubernetes.io/managed-by=nexus").items:
        ext.delete_custom_resource_definition(crd.metadata.name)  # ours only, from an earlier run
    deadline = time.monotonic() + 60
    while (
        ext.list_custom_resource_definition(label_selector="app.kubernetes.io/managed-by=nexus").items
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    line = one_error_line(run(project, testbed.kubeconfig, "deploy", "--overlay", "dev"))
    assert line == (
        f'error: the API server of context "{context_of(testbed)}" does not serve 8 kinds of this overlay: '
        "PrometheusRule (monitoring.coreos.com/v1), ServiceMonitor (monitoring.coreos.com/v1), DestinationRule "
        "(networking.istio.io/v1beta1), "
        "ServiceEntry (networking.istio.io/v1beta1), Sidecar (networking.istio.io/v1beta1), VirtualService "
        "(networking.istio.io/v1beta1), "
        "AuthorizationPolicy (security.istio.io/v1), PeerAuthentication (security.istio.io/v1beta1); nothing was "
        "applied. "
        "Install their CustomResourceDefinitions with the mesh and the Prometheus Operator (see docs/deploy.md), or, "
        "on a test cluster "
        "that runs neither, add --install-crds (it applies generated/k8s/crds)"
    )
    with pytest.raises(ApiException):
        client.CoreV1Api(api).read_namespace(namespace)  # nothing was applied, not even the namespace

    result = run(
        project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--install-crds", "--timeout-per-wave", "120"
    )
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[1].startswith(
        "install CRDs: applied 8 CustomResourceDefinitions (authorizationpolicies.security.istio.io, "
    )
    # a PrometheusRule per service (43), as a ServiceMonitor
    assert out[-1] == "done: 587 objects applied, 3 StatefulSets ready, 43 Deployments available"
    status = json.loads(run(project, testbed.kubeconfig, "cluster-status", "--overlay", "dev", "--json").stdout)
    assert {(s["rollout"], tuple(s["drift"])) for s in status["services"]} == {("available", ())}
    assert status["shared_drift"] == []


def generated_minimal(root: Path, namespace: str, **postgres: Any) -> Path:
    """The minimal catalog generated for real (no mesh, no Prometheus Operator): PostgreSQL in
    wave 1 as a StatefulSet, auth (which uses it) in wave 2, gateway and media in wave 3."""
    data = copy.deepcopy(MINIMAL)
    data["platform"] |= {"namespace": namespace, "mesh": "none", "monitoring": {"operator": False}}
    data["infrastructure"]["postgres"] |= postgres
    (root / "catalog.yaml").write_text(dump(data), encoding="utf-8")
    generate(root / "catalog.yaml")
    return root


def secret_versions(api: Any, namespace: str) -> dict[str, tuple[str, str]]:
    from kubernetes import client

    return {
        s.metadata.name: (s.metadata.resource_version, base64.b64decode(s.data["password"]).decode())
        for s in client.CoreV1Api(api).list_namespaced_secret(namespace).items
        if s.type == "Opaque"
    }


@pytest.mark.cluster
def test_deploy_creates_missing_secrets_once_waits_for_the_statefulset_and_never_changes_a_secret(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    from kubernetes import client

    project = generated_minimal(tmp_path, namespace)
    # one Secret made beforehand by a person: deploy must take it as it is
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "postgres"}, "type": "Opaque", "stringData": {"password": "chosenByOps1"}}
    )
    steps = plan_overlay(load_catalog(project / "catalog.yaml"), "dev")
    with Recorder(api, namespace, KINDS) as rec:
        result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--timeout-per-wave", "120")
        assert result.exit_code == 0, result.output
        rec.wait_for(sum(len(s.objects) for s in steps))
        # auth (wave 2) was created only after the PostgreSQL StatefulSet it uses was ready
        assert rec.revision_available("postgres") < rec.revision_created("Deployment/auth")
    out = result.stdout.splitlines()
    assert "wave  1  created 1 Secret with random passwords (postgres.auth)" in out
    assert "wave  1  postgres: 1/1 ready" in out
    assert out[-1] == "done: 29 objects applied, 1 StatefulSet ready, 3 Deployments available"
    made = secret_versions(api, namespace)
    assert made["postgres"][1] == "chosenByOps1"  # taken as it was
    assert len(made["postgres.auth"][1]) == 48 and all(c in "0123456789abcdef" for c in made["postgres.auth"][1])

    again = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev")
    assert again.exit_code == 0, again.output
    assert not any("created" in line for line in again.stdout.splitlines())
    assert secret_versions(api, namespace) == made  # not one Secret written again

    # a Secret without the key the pods mount is named before anything of its step is applied
    core.patch_namespaced_secret("postgres.auth", namespace, [{"op": "remove", "path": "/data/password"}])
    line = one_error_line(run(project, testbed.kubeconfig, "deploy", "--overlay", "dev"))
    assert line == (
        f"error: Secret {namespace}/postgres.auth has no key 'password'; add it or delete the Secret; nothing of "
        "this step was applied"
    )


@pytest.mark.cluster
def test_a_managed_instances_missing_administrator_secret_stops_the_deploy_before_its_provisioning(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    """The administrator's Secret of a managed PostgreSQL is its owners' to make: deploy names it
    (and the keys it needs), makes up no password, and applies nothing of the Job's step."""
    external = {"host": "db.example.com", "port": 5432, "secret": "rds-admin"}
    project = generated_minimal(tmp_path, namespace, external=external)
    result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--timeout-per-wave", "120")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: Secret {namespace}/rds-admin does not exist: its managed instance's owners create it, with its "
        "administrator's password and username; nothing of this step was applied"
    )
    assert "wave  2" not in result.stdout  # auth's step: not one object
    from kubernetes import client

    secrets = client.CoreV1Api(api).list_namespaced_secret(namespace).items
    assert [x.metadata.name for x in secrets if x.type == "Opaque"] == []  # no password made up for it


def complete_pods(api: Any, namespace: str, selector: str, stop: threading.Event) -> None:
    """What a kubelet does when a Job's container exits 0, for the testbed's, which keeps every
    pod running: each running pod of ``selector`` is marked Succeeded; the real Job controller
    then counts it and marks the Job Complete."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    while not stop.is_set():
        for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
            if pod.status.phase == "Running":
                t = datetime.now(UTC).isoformat()
                terminated = {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}
                statuses = [
                    {"name": c.name, "image": c.image, "imageID": "fake://", "ready": False, "restartCount": 0,
                     "state": {"terminated": terminated}}
                    for c in pod.spec.containers
                ]  # fmt: skip
                body = {"status": {"phase": "Succeeded", "containerStatuses": statuses}}
                with contextlib.suppress(client.ApiException):
                    core.patch_namespaced_pod_status(pod.metadata.name, namespace, body)
        stop.wait(0.5)


@pytest.mark.cluster
def test_a_managed_postgres_gets_its_users_made_by_a_job_that_deploy_waits_for(
    testbed: Testbed, api: Any, tmp_path: Path, namespace: str
) -> None:
    """PostgreSQL on RDS: deploy creates each user's Secret (Nexus makes the users), runs the
    provisioning Job as the administrator whose Secret the owners made, and applies the users'
    step only once the Job is complete; a redeploy changes nothing, a new host is a new Job and
    the old one is pruned."""
    from kubernetes import client

    external = {"host": "db.example.com", "port": 5432, "secret": "rds-admin"}
    project = generated_minimal(tmp_path, namespace, external=external)
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    admin = {"username": "rds_admin", "password": "fromTheOwners1"}
    core.create_namespaced_secret(namespace, {"metadata": {"name": "rds-admin"}, "type": "Opaque", "stringData": admin})
    job = next(
        o for s in plan_overlay(load_catalog(project / "catalog.yaml"), "dev") for o in s.objects if o.kind == "Job"
    )
    assert job.name.startswith("postgres-provision-")
    stop = threading.Event()
    kubelet = threading.Thread(
        target=complete_pods, args=(api, namespace, "app.kubernetes.io/name=postgres-provision", stop), daemon=True
    )
    kubelet.start()
    try:
        with Recorder(api, namespace, KINDS) as rec:
            result = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev", "--timeout-per-wave", "120")
            assert result.exit_code == 0, result.output
            # auth (wave 2) was created only after the Job that made its role had completed
            assert rec.revision_available(job.name) < rec.revision_created("Deployment/auth")
        out = result.stdout.splitlines()
        assert "wave  1  created 1 Secret with random passwords (postgres.auth)" in out
        assert f"wave  1  {job.name}: completed" in out
        assert out[-1].startswith("done: ") and out[-1].endswith(", 1 Job completed, 3 Deployments available")
        made = secret_versions(api, namespace)
        assert set(made) == {"postgres.auth", "rds-admin"} and made["rds-admin"][1] == "fromTheOwners1"
        batch = client.BatchV1Api(api)
        conditions = {c.type: c.status for c in batch.read_namespaced_job(job.name, namespace).status.conditions}
        assert conditions.get("Complete") == "True"

        again = run(project, testbed.kubeconfig, "deploy", "--overlay", "dev")
        assert again.exit_code == 0, again.output
        assert secret_versions(api, namespace) == made  # the user's password is never made again

        external["host"] = "db2.example.com"  # a new host: a new Job, the old one pruned
        (tmp_path / "moved").mkdir()
        moved = generated_minimal(tmp_path / "moved", namespace, external=external)
        result = run(moved, testbed.kubeconfig, "deploy", "--overlay", "dev", "--prune", "--timeout-per-wave", "120")
        assert result.exit_code == 0, result.output
        names = [j.metadata.name for j in batch.list_namespaced_job(namespace).items]
        assert len(names) == 1 and names[0] != job.name and names[0].startswith("postgres-provision-")
    finally:
        stop.set()
        kubelet.join(5)
