"""The wave-wait logic on the kubernetes client's own models, and drift as paths."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes.client import (
    CoreV1Event,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentCondition,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1ObjectReference,
    V1Pod,
    V1PodStatus,
    V1PodTemplateSpec,
)

from nexus.cluster.drift import differences
from nexus.cluster.rollout import AVAILABLE, FAILED, PROGRESSING, Rollout, describe_pods, job_rollout, rollout_of, wait


def deployment(
    name: str = "token-mgr",
    *,
    replicas: int = 2,
    generation: int = 3,
    observed: int = 3,
    updated: int = 2,
    total: int = 2,
    available: int = 2,
    conditions: tuple[tuple[str, str, str], ...] = (
        ("Available", "True", "MinimumReplicasAvailable"),
        ("Progressing", "True", "NewReplicaSetAvailable"),
    ),
) -> V1Deployment:
    return V1Deployment(
        metadata=V1ObjectMeta(name=name, generation=generation),
        spec=V1DeploymentSpec(
            replicas=replicas,
            selector=V1LabelSelector(match_labels={"app.kubernetes.io/name": name}),
            template=V1PodTemplateSpec(),
        ),
        status=V1DeploymentStatus(
            observed_generation=observed,
            replicas=total,
            updated_replicas=updated,
            ready_replicas=available,
            available_replicas=available,
            conditions=[
                V1DeploymentCondition(type=t, status=s, reason=r, message=f"{r} message") for t, s, r in conditions
            ],
        ),
    )


STUCK = (("Available", "False", "MinimumReplicasUnavailable"), ("Progressing", "False", "ProgressDeadlineExceeded"))
UNAVAILABLE = (("Available", "False", "MinimumReplicasUnavailable"), ("Progressing", "True", "ReplicaSetUpdated"))


@pytest.mark.parametrize(
    ("dep", "state", "detail"),
    [
        (deployment(), AVAILABLE, "2/2 available"),
        (deployment(generation=4), PROGRESSING, "waiting for the controller to see the new spec"),
        (deployment(updated=1, available=1), PROGRESSING, "1 of 2 replicas updated"),
        (deployment(total=3), PROGRESSING, "1 old replicas pending termination"),
        (deployment(available=1, conditions=UNAVAILABLE), PROGRESSING, "1 of 2 updated replicas available"),
        (deployment(conditions=UNAVAILABLE), PROGRESSING, "not Available: MinimumReplicasUnavailable message"),
        (deployment(conditions=()), PROGRESSING, "not Available: no Available condition yet"),
        (
            deployment(available=0, conditions=STUCK),
            FAILED,
            "exceeded its progress deadline: ProgressDeadlineExceeded message",
        ),
        (
            V1Deployment(metadata=V1ObjectMeta(name="new", generation=1), spec=deployment().spec),
            PROGRESSING,
            "waiting for the controller to see the new spec",
        ),
    ],
    ids=[
        "available",
        "unobserved",
        "updating",
        "old-pending",
        "unavailable",
        "condition-false",
        "no-condition",
        "stuck",
        "no-status",
    ],
)
def test_rollout_of(dep: V1Deployment, state: str, detail: str) -> None:
    r = rollout_of(dep)
    assert (r.state, r.detail) == (state, detail)


def test_wait_returns_when_every_deployment_is_available() -> None:
    seen: list[str] = []
    snapshots = iter(
        [
            {"a": deployment("a"), "b": deployment("b", updated=0, available=0)},
            {"a": deployment("a"), "b": deployment("b")},
        ]
    )
    outcome = wait(lambda: next(snapshots), ["a", "b"], timeout=60, poll=0, on_available=lambda n, r: seen.append(n))
    assert outcome.ok and seen == ["a", "b"]


def test_wait_stops_at_the_first_failure() -> None:
    outcome = wait(
        lambda: {"a": deployment("a"), "b": deployment("b", available=0, conditions=STUCK)}, ["a", "b"], timeout=60
    )
    assert not outcome.ok and list(outcome.failed) == ["b"] and not outcome.timed_out


def test_wait_times_out_with_what_is_pending() -> None:
    outcome = wait(lambda: {"a": deployment("a", available=1, conditions=UNAVAILABLE)}, ["a", "gone"], timeout=0)
    assert outcome.timed_out and not outcome.ok
    assert {n: r.detail for n, r in outcome.pending.items()} == {
        "a": "1 of 2 updated replicas available",
        "gone": "not created yet",
    }


def test_wait_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    outcome = wait(lambda: {"a": deployment("a", updated=0, available=0)}, ["a"], timeout=60, stop=stop)
    assert outcome.interrupted and not outcome.ok and not outcome.timed_out


def test_describe_pods_shows_waiting_reasons_restarts_and_latest_events_merged() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    crash = V1ContainerStatus(
        name="token-mgr",
        image="x",
        image_id="",
        ready=False,
        restart_count=6,
        state=V1ContainerState(
            waiting=V1ContainerStateWaiting(
                reason="CrashLoopBackOff", message="back-off 5m0s restarting failed container"
            )
        ),
        last_state=V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=1, reason="Error")),
    )
    pull = V1ContainerStatus(
        name="token-mgr",
        image="x",
        image_id="",
        ready=False,
        restart_count=0,
        state=V1ContainerState(waiting=V1ContainerStateWaiting(reason="ImagePullBackOff")),
    )
    running = V1ContainerStatus(
        name="token-mgr",
        image="x",
        image_id="",
        ready=False,
        restart_count=0,
        state=V1ContainerState(running=V1ContainerStateRunning()),
    )
    pods = [
        V1Pod(
            metadata=V1ObjectMeta(name="token-mgr-b"), status=V1PodStatus(phase="Pending", container_statuses=[pull])
        ),
        V1Pod(
            metadata=V1ObjectMeta(name="token-mgr-a"), status=V1PodStatus(phase="Running", container_statuses=[crash])
        ),
        V1Pod(
            metadata=V1ObjectMeta(name="token-mgr-c"), status=V1PodStatus(phase="Running", container_statuses=[running])
        ),
    ]

    def event(i: int, reason: str, message: str, kind: str = "Warning", count: int = 1) -> CoreV1Event:
        return CoreV1Event(
            metadata=V1ObjectMeta(name=f"e{i}"),
            involved_object=V1ObjectReference(name="token-mgr-a"),
            reason=reason,
            message=message,
            type=kind,
            count=count,
            last_timestamp=now + timedelta(seconds=i),
        )

    events = {
        "token-mgr-a": [event(9, "BackOff", "Back-off restarting failed container", count=12)]
        + [event(i, "Pulled", "pulled", "Normal") for i in range(6)]
    }
    assert describe_pods(pods, events, last=3) == [
        "  pod token-mgr-a: Running",
        "    container token-mgr: waiting: CrashLoopBackOff (back-off 5m0s restarting failed container); last exit 1 "
        "(Error), 6 restarts",
        "    event Normal Pulled x6: pulled",  # six identical events, shown once with their count
        "    event Warning BackOff x12: Back-off restarting failed container",
        "  pod token-mgr-b: Pending",
        "    container token-mgr: waiting: ImagePullBackOff, 0 restarts",
        "  pod token-mgr-c: Running",
        "    container token-mgr: running, not ready, 0 restarts",
    ]
    assert "no pods" in describe_pods([], {})[0]


def test_differences_names_paths_and_ignores_bookkeeping() -> None:
    live = {
        "metadata": {
            "name": "a",
            "resourceVersion": "7",
            "generation": 2,
            "managedFields": [{"manager": "kubectl-edit"}],
            "labels": {"x": "1"},
        },
        "spec": {
            "template": {"spec": {"containers": [{"name": "a", "image": "a:2"}, {"name": "b", "image": "b:1"}]}},
            "replicas": 3,
        },
        "status": {"replicas": 3},
    }
    applied = {
        "metadata": {
            "name": "a",
            "resourceVersion": "8",
            "generation": 3,
            "managedFields": [{"manager": "nexus"}],
            "labels": {"x": "1"},
        },
        "spec": {
            "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}},
            "replicas": 3,
        },
        "status": {"replicas": 1},
    }
    assert differences(live, applied) == ["spec.template.spec.containers[0].image"]
    assert differences(live, live) == []
    applied["data"] = {"K": "v"}
    applied["spec"]["template"]["spec"]["containers"].pop()
    assert differences(live, applied) == ["data", "spec.template.spec.containers"]


def test_a_job_is_done_when_complete_failed_when_its_failed_condition_is_true_and_running_otherwise() -> None:
    """A managed instance's provisioning Job, as deploy judges it before the users' step."""
    from kubernetes.client import V1Job, V1JobCondition, V1JobStatus

    def job(*conditions: tuple[str, str, str | None, str | None], active: int = 0, failed: int = 0) -> V1Job:
        made = [V1JobCondition(type=t, status=s, reason=r, message=m) for t, s, r, m in conditions]
        return V1Job(status=V1JobStatus(conditions=made or None, active=active, failed=failed))

    assert job_rollout(job(("Complete", "True", None, None))) == Rollout(AVAILABLE, "completed")
    assert job_rollout(
        job(("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit"), failed=7)
    ) == Rollout(FAILED, "failed: BackoffLimitExceeded Job has reached the specified backoff limit")
    assert job_rollout(job(("Complete", "False", None, None), active=1, failed=2)) == Rollout(
        PROGRESSING, "running (1 active, 2 failed attempts)"
    )
    assert job_rollout(V1Job()) == Rollout(PROGRESSING, "running (0 active, 0 failed attempts)")
