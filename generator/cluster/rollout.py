"""Rollout: is a Deployment (or StatefulSet, or Job) rolled out, and what to show when it is not.

Pure functions of the kubernetes client's own models (V1Deployment, V1Pod, CoreV1Event), so
they are tested on those models without a cluster. `wait` takes a function that fetches the
Deployments, so the same loop serves a real cluster and a test.

A Deployment is rolled out when the controller has seen its latest spec (observedGeneration),
every replica runs that spec (updatedReplicas), none of the old ones is left, all are available
(availableReplicas), and its Available condition is True: kubectl's rollout status, plus the
condition. It has failed when its Progressing condition says ProgressDeadlineExceeded; it has
timed out when the wave's own deadline passes first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import (
    CoreV1Event,
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentCondition,
    V1Job,
    V1Pod,
    V1StatefulSet,
)

from .client import name_of

AVAILABLE, PROGRESSING, FAILED = "available", "progressing", "failed"


@dataclass(frozen=True)
class Rollout:
    state: str  # AVAILABLE, PROGRESSING or FAILED
    detail: str  # for people: "2 of 3 updated replicas are available"


def _condition(dep: V1Deployment, kind: str) -> V1DeploymentCondition | None:
    return next((c for c in (dep.status and dep.status.conditions) or [] if c.type == kind), None)


def rollout_of(dep: V1Deployment, minimum: int | None = None) -> Rollout:
    """Where one Deployment's rollout stands. ``minimum``: its HorizontalPodAutoscaler's
    minReplicas, which the Deployment must reach too (a new one starts at 1 until the HPA scales it)."""
    status = dep.status
    want = dep.spec.replicas if dep.spec and dep.spec.replicas is not None else 1
    if minimum is not None and want < minimum:
        return Rollout(
            PROGRESSING,
            f"{want} of {minimum} replicas wanted: waiting for the HorizontalPodAutoscaler to scale to its minimum",
        )
    if status is None or ((dep.metadata and dep.metadata.generation) or 0) > (status.observed_generation or 0):
        return Rollout(PROGRESSING, "waiting for the controller to see the new spec")
    progressing = _condition(dep, "Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return Rollout(FAILED, f"exceeded its progress deadline: {progressing.message or 'no message'}")
    updated, replicas, available = status.updated_replicas or 0, status.replicas or 0, status.available_replicas or 0
    if updated < want:
        return Rollout(PROGRESSING, f"{updated} of {want} replicas updated")
    if replicas > updated:
        return Rollout(PROGRESSING, f"{replicas - updated} old replicas pending termination")
    if available < updated:
        return Rollout(PROGRESSING, f"{available} of {updated} updated replicas available")
    condition = _condition(dep, "Available")
    if condition is None or condition.status != "True":
        why = condition.message if condition is not None and condition.message else "no Available condition yet"
        return Rollout(PROGRESSING, f"not Available: {why}")
    return Rollout(AVAILABLE, f"{available}/{want} available")


def statefulset_rollout(sts: V1StatefulSet, minimum: int | None = None) -> Rollout:
    """Where one StatefulSet's rollout stands (kubectl's rollout status for the RollingUpdate
    strategy): its latest spec seen, every replica on the update revision and ready. ``minimum``
    is unused: no HorizontalPodAutoscaler scales a StatefulSet here."""
    status, want = sts.status, (sts.spec.replicas if sts.spec and sts.spec.replicas is not None else 1)
    if status is None or ((sts.metadata and sts.metadata.generation) or 0) > (status.observed_generation or 0):
        return Rollout(PROGRESSING, "waiting for the controller to see the new spec")
    updated, ready = status.updated_replicas or 0, status.ready_replicas or 0
    if updated < want:
        return Rollout(PROGRESSING, f"{updated} of {want} replicas updated")
    if ready < want:
        return Rollout(PROGRESSING, f"{ready} of {want} replicas ready")
    if status.update_revision and status.current_revision != status.update_revision:
        return Rollout(PROGRESSING, "waiting for the update revision to become current")
    return Rollout(AVAILABLE, f"{ready}/{want} ready")


def job_rollout(job: V1Job, minimum: int | None = None) -> Rollout:
    """Where a Job stands (a managed instance's provisioning): done when its Complete condition
    is True, failed when its Failed one is (backoffLimit or activeDeadlineSeconds reached).
    ``minimum`` is unused: no HorizontalPodAutoscaler scales a Job."""
    conditions = {c.type: c for c in (job.status and job.status.conditions) or [] if c.status == "True"}
    if "Complete" in conditions:
        return Rollout(AVAILABLE, "completed")
    if "Failed" in conditions:
        failed = conditions["Failed"]
        return Rollout(FAILED, f"failed: {failed.reason or ''} {failed.message or ''}".rstrip())
    status = job.status
    active, failures = (status.active or 0, status.failed or 0) if status else (0, 0)
    return Rollout(PROGRESSING, f"running ({active} active, {failures} failed attempts)")


@dataclass
class Outcome:
    """How a wave's wait ended. ``ok`` only when every Deployment is available."""

    states: dict[str, Rollout] = field(default_factory=dict)
    timed_out: bool = False
    interrupted: bool = False

    @property
    def failed(self) -> dict[str, Rollout]:
        return {n: r for n, r in self.states.items() if r.state == FAILED}

    @property
    def pending(self) -> dict[str, Rollout]:
        return {n: r for n, r in self.states.items() if r.state != AVAILABLE}

    @property
    def ok(self) -> bool:
        return not self.pending and not self.interrupted


def wait(
    fetch: Callable[[], Mapping[str, Any]],
    names: Iterable[str],
    *,
    timeout: float,
    poll: float = 2.0,
    stop: threading.Event | None = None,
    on_available: Callable[[str, Rollout], None] = lambda name, r: None,
    minimums: dict[str, int] | None = None,
    judge: Callable[[Any, int | None], Rollout] = rollout_of,
) -> Outcome:
    """Poll until every named workload is available, one has failed, time is up, or ``stop`` is set.

    ``fetch`` returns the live workloads by name, which ``judge`` reads (Deployments by default);
    a name it lacks counts as progressing.
    ``minimums``: per name, the replicas its HorizontalPodAutoscaler keeps at least.
    """
    names = sorted(names)
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    stop = stop or threading.Event()
    while True:
        live = fetch()
        floors = minimums or {}
        states = {
            n: judge(live[n], floors.get(n)) if n in live else Rollout(PROGRESSING, "not created yet") for n in names
        }
        for n, r in states.items():
            if r.state == AVAILABLE and n not in reported:
                reported.add(n)
                on_available(n, r)
        outcome = Outcome(states)
        if not outcome.pending or outcome.failed:
            return outcome
        if stop.is_set():
            outcome.interrupted = True
            return outcome
        if time.monotonic() >= deadline:
            outcome.timed_out = True
            return outcome
        stop.wait(min(poll, max(0.0, deadline - time.monotonic())))


def _when(event: CoreV1Event) -> datetime:
    stamp = event.last_timestamp or event.event_time or event.first_timestamp or event.metadata.creation_timestamp
    return stamp or datetime.min.replace(tzinfo=UTC)


def describe_pods(pods: list[V1Pod], events: dict[str, list[CoreV1Event]], *, last: int = 5) -> list[str]:
    """Lines for people: each pod's phase, each container's state and restarts, its latest events."""
    if not pods:
        return ["  no pods: the ReplicaSet could not create any (quota, admission, or a missing ServiceAccount?)"]
    lines = []
    for pod in sorted(pods, key=name_of):
        lines.append(f"  pod {name_of(pod)}: {pod.status.phase if pod.status else 'Unknown'}")
        statuses = [
            *((pod.status and pod.status.init_container_statuses) or []),
            *((pod.status and pod.status.container_statuses) or []),
        ]
        for cs in statuses:
            restarts = cs.restart_count or 0
            lines.append(
                f"    container {cs.name}: {_container_state(cs)}, {restarts} restart{'' if restarts == 1 else 's'}"
            )
        for (kind, reason, message), count in _merged(events.get(name_of(pod), []))[-last:]:
            times = f" x{count}" if count > 1 else ""
            lines.append(f"    event {kind} {reason}{times}: {message}".rstrip())
    return lines


def _merged(events: list[CoreV1Event]) -> list[tuple[tuple[str, str, str], int]]:
    """Events that say the same thing (type, reason, message) as one, their counts added, in the
    order of each one's latest: a kubelet that posts the same event twice is shown once, "x2"."""
    total: dict[tuple[str, str, str], int] = {}
    latest: dict[tuple[str, str, str], datetime] = {}
    for ev in events:
        key = (ev.type or "Normal", str(ev.reason or ""), ev.message or "")
        total[key] = total.get(key, 0) + max(1, ev.count or 1)
        latest[key] = max(latest.get(key, _when(ev)), _when(ev))
    return sorted(total.items(), key=lambda item: latest[item[0]])


def _container_state(cs: V1ContainerStatus) -> str:
    state, last = cs.state, cs.last_state
    if state and state.waiting:
        text = f"waiting: {state.waiting.reason}" + (f" ({state.waiting.message})" if state.waiting.message else "")
    elif state and state.terminated:
        text = f"terminated: {state.terminated.reason} (exit {state.terminated.exit_code})"
    elif state and state.running:
        text = "running" + ("" if cs.ready else ", not ready")
    else:
        text = "no state yet"
    if last and last.terminated:
        text += f"; last exit {last.terminated.exit_code} ({last.terminated.reason})"
    return text
