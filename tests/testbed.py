"""The Kubernetes testbed the cluster tests run against, and what they share on it.

The testbed is ../shared/k8s-testbed (its README): a real kube-apiserver, controller-manager and
scheduler (v1.20, patched to serve autoscaling/v2 and policy/v1) on loopback with etcd, and a
stand-in kubelet that marks scheduled pods Running and Ready, or crash-looping when their image
names TESTBED_FAIL_IMAGE. ``cluster`` (a fixture for a whole session) finds a running cluster
(KUBECONFIG, else the testbed's own kubeconfig) or starts the testbed with its scripts and stops
it after; without either the cluster tests skip, saying why, and under CI=true they fail instead.
Every test gets a namespace of its own and waits for its deletion (``Namespaces``), so no test
meets another's namespace "being terminated".
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# where the testbed's scripts are (NEXUS_TESTBED_SCRIPTS), and its build and state (NEXUS_TESTBED, as its
# scripts read it)
SCRIPTS = Path(
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "testbed.sh"), "scripts"], capture_output=True, text=True
    ).stdout.strip()
)
STATE = Path(
    os.environ.get("NEXUS_TESTBED")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nexus-k8s-testbed"
)
FAIL_IMAGE = "nexus-crashloop"  # scripts/testbed.sh starts the stand-in kubelet with TESTBED_FAIL_IMAGE set to this
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip, saying why; in CI a cluster test that cannot run is a failure, not a skip."""
    if IN_CI:
        pytest.fail(f"CI=true and the cluster tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _answers(kubeconfig: str) -> str | None:
    """None if the cluster of this kubeconfig answers, else why not."""
    from nexus.cluster.client import connect
    from nexus.errors import NexusError

    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = kubeconfig
    try:
        connect().check()
    except NexusError as exc:
        return str(exc)
    finally:
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old
    return None


@dataclass
class Testbed:
    __test__ = False  # not a test class, despite its name

    kubeconfig: str
    started: bool  # by this pytest process
    fail_image: str | None  # what makes the stand-in kubelet crash-loop a container, if known

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}


def _fail_image() -> str | None:
    """TESTBED_FAIL_IMAGE of the running stand-in kubelet, read from its process environment."""
    pid_file = STATE / "run" / "fake-kubelet.pid"
    try:
        env = Path(f"/proc/{pid_file.read_text().strip()}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    found = [e.partition(b"=")[2].decode() for e in env if e.startswith(b"TESTBED_FAIL_IMAGE=")]
    return found[0] if found and found[0] else None


def find_or_start() -> Testbed:
    """A cluster to test against; see the module docstring. Skips (fails under CI) without one."""
    given = os.environ.get("KUBECONFIG")
    if given:
        why = _answers(given)
        if why is None:
            own = (STATE / "kubeconfig").is_file() and Path(given).resolve() == (STATE / "kubeconfig").resolve()
            return Testbed(given, False, _fail_image() if own else None)
        unavailable(f"KUBECONFIG={given} points at no usable cluster: {why}")
    if not (SCRIPTS / "start-cluster.sh").is_file():
        unavailable(
            f"no cluster: KUBECONFIG is not set and the testbed's scripts are not at {SCRIPTS} (set "
            "NEXUS_TESTBED_SCRIPTS)"
        )
    kubeconfig = str(STATE / "kubeconfig")
    if Path(kubeconfig).is_file() and _answers(kubeconfig) is None:
        return Testbed(kubeconfig, False, _fail_image())
    if not (STATE / "bin" / "kube-apiserver").is_file():
        unavailable(
            f"the testbed is not built in {STATE}: run `bash scripts/testbed.sh build` once (about 10 to 20 minutes)"
        )
    with _lock("start", fcntl.LOCK_EX):  # pytest-xdist workers: one starts it, the others find it running
        if _answers(kubeconfig) is None:
            return Testbed(kubeconfig, False, _fail_image())
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "testbed.sh"), "start"],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
            env={**os.environ, "TESTBED_PYTHON": sys.executable},
        )
        if proc.returncode != 0 or "testbed started" not in proc.stdout:
            unavailable(f"the testbed did not start: {proc.stdout[-600:]}{proc.stderr[-600:]}")
        (STATE / "run" / "started-by-pytest").touch()
    return Testbed(kubeconfig, True, _fail_image())


@contextmanager
def _lock(name: str, how: int) -> Iterator[None]:
    (STATE / "run").mkdir(parents=True, exist_ok=True)
    with open(STATE / "run" / f".{name}.lock", "w") as f:
        fcntl.flock(f, how)
        yield


@contextmanager
def using(bed: Testbed) -> Iterator[Testbed]:
    """Hold the testbed for one pytest process (a shared lock); when the last one lets go, stop
    it if pytest started it. Workers finish at different times: none stops it under another."""
    (STATE / "run").mkdir(parents=True, exist_ok=True)
    with open(STATE / "run" / ".users.lock", "w") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        try:
            yield bed
        finally:
            fcntl.flock(users, fcntl.LOCK_UN)
            if _last(users):
                with _lock("start", fcntl.LOCK_EX):
                    marker = STATE / "run" / "started-by-pytest"
                    if marker.exists():
                        subprocess.run(
                            ["bash", str(ROOT / "scripts" / "testbed.sh"), "stop"],
                            capture_output=True,
                            text=True,
                            timeout=120,
                            check=False,
                        )
                        marker.unlink(missing_ok=True)


def _last(users: Any) -> bool:
    """Whether no other pytest process holds the testbed (an exclusive lock is free)."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# --- namespaces of their own ---------------------------------------------------------------------


def unique_namespace(prefix: str = "nexus-t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def delete_namespace(api: Any, name: str, timeout: float = 180) -> None:
    """Delete a namespace and wait until it is gone, so nothing later meets it "being terminated"."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api)
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    raise AssertionError(f"namespace {name} still exists {timeout:g} s after its deletion")


# --- what the API server saw, in its own order ---------------------------------------------------


@dataclass(frozen=True)
class Seen:
    revision: int  # etcd's revision: one order for every write to the cluster
    event: str  # ADDED, MODIFIED, DELETED
    kind: str
    name: str
    available: bool  # a Deployment whose rollout is complete


@dataclass
class Recorder:
    """Watches kinds in a namespace from a revision on: the server's record of what was written
    in which order (creation revisions), and when each Deployment became available."""

    api: Any
    namespace: str
    kinds: list[tuple[str, str]]
    seen: list[Seen] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _watchers: list[Any] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Recorder:
        from kubernetes import client, watch
        from kubernetes.dynamic import DynamicClient

        dyn = DynamicClient(self.api)
        start = client.CoreV1Api(self.api).list_namespace(limit=1).metadata.resource_version
        lock = threading.Lock()
        for api_version, kind in self.kinds:
            res = dyn.resources.get(api_version=api_version, kind=kind)
            watcher = watch.Watch()
            self._watchers.append(watcher)
            # Nexus's objects only: not the ConfigMap and ServiceAccount that controllers put in every namespace
            args: dict[str, Any] = (
                {"namespace": self.namespace, "label_selector": "app.kubernetes.io/managed-by=nexus"}
                if res.namespaced
                else {"field_selector": f"metadata.name={self.namespace}"}
            )

            def run(res: Any = res, watcher: Any = watcher, args: dict[str, Any] = args) -> None:
                try:
                    for ev in res.watch(resource_version=start, watcher=watcher, timeout=600, **args):
                        obj = ev["raw_object"]
                        with lock:
                            self.seen.append(
                                Seen(
                                    int(obj["metadata"]["resourceVersion"]),
                                    ev["type"],
                                    obj["kind"],
                                    obj["metadata"]["name"],
                                    _available(obj),
                                )
                            )
                except Exception:  # the connection closes under a stopped watch; before that, an error is the test's
                    if not self._stopped.is_set():
                        raise

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        for w in self._watchers:
            w.stop()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.created()) < count and time.monotonic() < deadline:
            time.sleep(0.2)

    def created(self) -> list[str]:
        """Kind/name of every object created, in the order the server wrote them."""
        return [f"{s.kind}/{s.name}" for s in sorted(self.seen, key=lambda s: s.revision) if s.event == "ADDED"]

    def revision_created(self, ref: str) -> int:
        return min(s.revision for s in self.seen if s.event == "ADDED" and f"{s.kind}/{s.name}" == ref)

    def revision_available(self, name: str) -> int:
        return min(s.revision for s in self.seen if s.kind in WORKLOADS and s.name == name and s.available)


WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _available(obj: dict[str, Any]) -> bool:
    """A Deployment available, a StatefulSet's replicas all ready, or a Job complete, in the server's own status."""
    status, spec, meta = obj.get("status") or {}, obj.get("spec") or {}, obj["metadata"]
    if obj.get("kind") == "Job":
        return any(c["type"] == "Complete" and c["status"] == "True" for c in status.get("conditions") or [])
    if obj.get("kind") == "StatefulSet":
        return status.get("observedGeneration", 0) >= meta.get("generation", 1) and (
            status.get("readyReplicas") or 0
        ) >= (spec.get("replicas") or 1)
    if obj.get("kind") != "Deployment":
        return False
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return (
        status.get("observedGeneration", 0) >= meta.get("generation", 1)
        and (status.get("availableReplicas") or 0) >= (spec.get("replicas") or 1)
        and conditions.get("Available") == "True"
    )


# --- storage: the testbed has no provisioner, so the tests are one -------------------------------

INFRA_CLAIMS = tuple(f"data-{c}-0" for c in ("nats", "postgres", "redis"))  # volumeClaimTemplate "data", one replica


def provide_volumes(api: Any, namespace: str, claims: tuple[str, ...] = INFRA_CLAIMS) -> list[str]:
    """A PersistentVolume pre-bound to each claim the StatefulSets of ``namespace`` will make, as
    a static provisioner would; the real PV controller binds them and the scheduler places the
    pods. Returns the volumes' names, for remove_volumes."""
    from kubernetes import client

    core, names = client.CoreV1Api(api), []
    for claim in claims:
        name = f"{namespace}-{claim}"
        core.create_persistent_volume(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": "100Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": f"/tmp/{name}"},  # nothing mounts it: the testbed runs no containers
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            }
        )
        names.append(name)
    return names


def remove_volumes(api: Any, names: list[str]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    for name in names:
        try:
            client.CoreV1Api(api).delete_persistent_volume(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
