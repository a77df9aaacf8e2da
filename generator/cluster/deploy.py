"""`deploy()`: the catalog's plan carried out on a Kubernetes cluster.

deploy reads as its phases: build the overlay, hold it to the plan, order it, select (--wave,
--only), connect, then per step apply every object (server-side apply) and wait for the step's
Deployments to roll out before the next; last, find what Nexus applied earlier that the overlay
no longer has, and prune it if asked. ``report`` receives a line per thing done, for people.

Ctrl-C during a deploy sets a flag instead of raising: the apply in flight finishes, nothing
more is sent, and DeployInterrupted says what was applied. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..catalog import Loaded
from ..errors import ApplyError, DeployInterrupted, OverlayError, RolloutError
from . import secrets
from .client import Cluster, connect, name_of
from .overlay import NAME_LABEL, Obj, Step, build, check_waves, order, select
from .rollout import Rollout, describe_pods, job_rollout, rollout_of, statefulset_rollout, wait

OVERLAYS = Path("generated") / "k8s" / "overlays"
CRDS = Path("generated") / "k8s" / "crds"  # generator.crds: the custom kinds' definitions, for --install-crds
CRD = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
MANAGED = "app.kubernetes.io/managed-by=nexus"
# Kinds looked at for objects Nexus applied earlier, besides those the overlay has now: what the
# k8s renderer writes. Never Namespace: pruning it would delete everything inside.
PRUNABLE = (
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),  # a managed instance's provisioning: a changed one has a new name
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)

# where a deploy lists each kind it waited for, once it was done (Deployed's fields)
FINISHED = {"Deployment": "available", "StatefulSet": "ready", "Job": "completed"}

DryRun = Literal["client", "server"] | None
Report = Callable[[str], None]


@dataclass
class Deployed:
    """What a deploy did. ``steps`` is the ordered plan it followed (after --wave/--only)."""

    steps: list[Step]
    applied: list[str] = field(default_factory=list)
    available: list[str] = field(default_factory=list)
    orphans: list[Obj] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)  # StatefulSets
    completed: list[str] = field(default_factory=list)  # Jobs (managed instances' provisioning)
    secrets: list[str] = field(default_factory=list)  # created, with random passwords (never changed later)


def overlay_dir(loaded: Loaded, overlay: str) -> Path:
    """An overlay by name (dev) under generated/k8s/overlays, or by path if it has a slash."""
    if "/" in overlay or "\\" in overlay:
        return Path(overlay)
    base = loaded.root / OVERLAYS
    if not (base / overlay).is_dir():
        have = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise OverlayError(
            f"no overlay {overlay!r} in {base} (it has: {', '.join(have) or 'none'}); run `nexus generate` to write "
            "the overlays"
        )
    return base / overlay


def plan_overlay(loaded: Loaded, overlay: str) -> list[Step]:
    """Build an overlay and order it by the catalog's plan: the whole plan, nothing selected."""
    objs = build(overlay_dir(loaded, overlay))
    check_waves(objs, loaded.plan)
    return order(objs, loaded.plan, {s.name: s.title for s in loaded.catalog.stages})


def deploy(
    loaded: Loaded,
    overlay: str,
    *,
    context: str | None = None,
    dry_run: DryRun = None,
    wave: int | None = None,
    only: Iterable[str] = (),
    prune: bool = False,
    install_crds: bool = False,
    timeout_per_wave: float = 300,
    poll: float = 2.0,
    report: Report = lambda line: None,
    stop: threading.Event | None = None,
) -> Deployed:
    """Apply an overlay wave by wave, waiting for each wave's rollout. See the module docstring."""
    everything = plan_overlay(loaded, overlay)
    steps = select(everything, wave, only)
    done = Deployed(steps)
    if dry_run == "client":
        return done
    if install_crds and dry_run == "server":
        raise ApplyError(
            "--install-crds cannot be combined with --dry-run=server: a dry run cannot make a kind exist, so the "
            "objects "
            "of those kinds could not be checked; install them first (`nexus deploy --overlay ... --install-crds "
            "--wave 0`)"
        )
    cluster = connect(context)
    server = dry_run == "server"
    total = sum(len(s.objects) for s in steps)
    report(
        f"context {cluster.context} ({cluster.host}), server {cluster.check()}: {count(total, 'object')} in "
        f"{count(len(steps), 'step')}" + (", server dry run" if server else "")
    )
    if install_crds:
        _install_crds(cluster, loaded, report)
    # every kind the server lacks fails now, all named at once, before anything is applied
    if missing := cluster.missing((o.api_version, o.kind) for s in steps for o in s.objects):
        raise ApplyError(
            f'the API server of context "{cluster.context}" does not serve {count(len(missing), "kind")} of this '
            "overlay: "
            + ", ".join(f"{kind} ({api_version})" for api_version, kind in missing)
            + "; nothing was applied. Install their CustomResourceDefinitions with the mesh and the Prometheus "
            "Operator (see docs/deploy.md), or, on a test cluster that runs neither, add --install-crds (it applies "
            f"{CRDS.as_posix()})"
        )
    if server:
        _namespaces_exist(cluster, steps)
    run = _Run(cluster, done, total, report, stop or threading.Event(), timeout_per_wave, poll)
    with _ctrl_c(run.stop):
        for step in steps:
            run.check_stop(step)
            made = secrets.ensure(cluster, loaded.catalog, step.objects, dry_run=server)
            if made.created:
                done.secrets.extend(made.created)
                report(
                    f"{step.label}  created {count(len(made.created), 'Secret')} with random passwords "
                    f"({', '.join(made.created)})"
                )
            for obj in step.objects:
                run.check_stop(step)
                cluster.apply(obj.body, dry_run=server)
                done.applied.append(obj.ref)
            report(
                f"{step.label}  applied {count(len(step.objects), 'object')}"
                + (f" ({', '.join(step.services)})" if step.services else "")
            )
            if not server:
                run.roll_out(step)
        done.orphans = orphans(cluster, loaded, [o for s in everything for o in s.objects])
        for obj in done.orphans if prune else []:
            run.check_stop(None)
            cluster.delete(obj.api_version, obj.kind, obj.name, obj.namespace, dry_run=server)
            done.pruned.append(obj.ref)
    return done


def _install_crds(cluster: Cluster, loaded: Loaded, report: Report, timeout: float = 60) -> None:
    """Apply generated/k8s/crds and wait until each is Established. A CRD of the same name that
    Nexus did not make (the mesh's or the operator's own, serving more versions) is left alone."""
    folder = loaded.root / CRDS
    if not folder.is_dir():
        report("install CRDs: none needed (the overlays hold no custom kind)")
        return
    mine: list[Obj] = []
    kept: list[Obj] = []
    for obj in build(folder):
        live = cluster.get(*CRD, obj.name, None)
        labels = ((live or {}).get("metadata") or {}).get("labels") or {}
        (kept if live is not None and labels.get("app.kubernetes.io/managed-by") != "nexus" else mine).append(obj)
    for obj in mine:
        cluster.apply(obj.body)
    deadline = time.monotonic() + timeout
    for obj in mine:
        while not _established(cluster.get(*CRD, obj.name, None)):
            if time.monotonic() > deadline:
                raise ApplyError(
                    f'CustomResourceDefinition "{obj.name}" was applied but is not Established after {timeout:g} s; '
                    f"see `kubectl get crd {obj.name} -o yaml`"
                )
            time.sleep(0.5)
    cluster.rediscover()  # the kinds just defined, which discovery so far said were missing
    report(
        f"install CRDs: applied {count(len(mine), 'CustomResourceDefinition')} "
        f"({', '.join(o.name for o in mine) or 'none'})"
        + (
            f"; kept {count(len(kept), 'existing one')} that Nexus did not make ({', '.join(o.name for o in kept)})"
            if kept
            else ""
        )
    )


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _namespaces_exist(cluster: Cluster, steps: list[Step]) -> None:
    """A dry run creates nothing, so a namespace it would create cannot hold the objects it checks."""
    for ns in sorted({o.namespace for s in steps for o in s.objects if o.namespace}):
        if cluster.get("v1", "Namespace", ns, None) is None:
            raise ApplyError(
                f'namespace "{ns}" does not exist in context "{cluster.context}", and a server dry run cannot create '
                "it: "
                f"create it first (`kubectl --context {cluster.context} create namespace {ns}`) or deploy for real"
            )


@dataclass
class _Run:
    """One deploy in progress: where it reports, when it stops, how long a wave may take."""

    cluster: Cluster
    done: Deployed
    total: int
    report: Report
    stop: threading.Event
    timeout: float
    poll: float

    def check_stop(self, step: Step | None) -> None:
        if not self.stop.is_set():
            return
        where = f" during {step.name}" if step else " before pruning"
        applied = self.done.applied
        last = f" (the last: {applied[-1]})" if applied else ""
        raise DeployInterrupted(
            f"interrupted{where}: {len(applied)} of {self.total} objects were applied{last}; nothing more was sent. "
            "Run the same command again to go on: applying is idempotent.",
            list(applied),
        )

    def roll_out(self, step: Step) -> None:
        """Wait for the step's Jobs (a managed instance's users made), its StatefulSets, then its
        Deployments; RolloutError naming each one that failed or is late."""
        self._wait(step, "Job", self.cluster.jobs, job_rollout)
        self._wait(step, "StatefulSet", self.cluster.statefulsets, statefulset_rollout)
        self._wait(step, "Deployment", self.cluster.deployments, rollout_of)

    def _wait(
        self,
        step: Step,
        kind: str,
        listing: Callable[[str], Mapping[str, Any]],
        judge: Callable[[Any, int | None], Rollout],
    ) -> None:
        where = {o.name: str(o.namespace) for o in step.objects if o.kind == kind}
        if not where:
            return
        floors = hpa_minimums(o.body for o in step.objects)

        def fetch() -> dict[str, Any]:
            live = {n: d for ns in sorted(set(where.values())) for n, d in listing(ns).items()}
            return {n: d for n, d in live.items() if n in where}

        def available(name: str, r: Rollout) -> None:
            getattr(self.done, FINISHED[kind]).append(name)
            self.report(f"{step.label}  {name}: {r.detail}")

        outcome = wait(
            fetch,
            where,
            timeout=self.timeout,
            poll=self.poll,
            stop=self.stop,
            on_available=available,
            minimums=floors,
            judge=judge,
        )
        self.check_stop(step)
        if outcome.ok:
            return
        bad = outcome.failed or outcome.pending
        why = "failed" if outcome.failed else f"did not roll out within {self.timeout:g} s"
        lines = [f"{step.name} {why}: {', '.join(bad)}; waves after it were not applied"]
        for name, r in bad.items():
            lines += [f"{name}: {r.detail}", *self.diagnose(where[name], fetch().get(name), name)]
        raise RolloutError("\n".join(lines))

    def diagnose(self, namespace: str, live: Any, name: str) -> list[str]:
        """A workload's pods: their containers' states and their latest events."""
        labels = (live.spec.selector.match_labels if live and live.spec.selector else None) or {NAME_LABEL: name}
        pods = self.cluster.pods(namespace, ",".join(f"{k}={v}" for k, v in sorted(labels.items())))[:5]
        return describe_pods(pods, {name_of(p): self.cluster.events(namespace, name_of(p)) for p in pods})


@contextmanager
def _ctrl_c(stop: threading.Event) -> Iterator[None]:
    """The first Ctrl-C sets ``stop``; the second raises KeyboardInterrupt. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def hpa_minimums(bodies: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Deployment name -> the minReplicas of the HorizontalPodAutoscaler that scales it."""
    out = {}
    for body in bodies:
        spec = body.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        if body.get("kind") == "HorizontalPodAutoscaler" and target.get("kind") == "Deployment" and target.get("name"):
            out[str(target["name"])] = int(spec.get("minReplicas") or 1)
    return out


def orphans(cluster: Cluster, loaded: Loaded, current: list[Obj]) -> list[Obj]:
    """Objects labelled as Nexus's, of this platform, in its namespace, that the overlay lacks."""
    namespace = loaded.catalog.platform.namespace
    selector = f"{MANAGED},app.kubernetes.io/part-of={loaded.catalog.platform.name}"
    have = {o.key for o in current}
    kinds = sorted({*PRUNABLE, *((o.api_version, o.kind) for o in current if o.namespace is not None)})
    found = {
        (o := Obj(item)).key: o
        for api_version, kind in kinds
        for item in cluster.labelled(api_version, kind, namespace, selector)
    }
    return sorted((o for k, o in found.items() if k not in have), key=lambda o: (o.wave, *o.rank()))


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
