"""`cluster_status()`: per service on a cluster, desired and ready replicas, rollout, and drift.

Replicas and rollout come from the live Deployments (rollout.rollout_of). Drift needs to know
what was meant to be there, so it is checked only against an overlay: every generated object is
compared with its live twin by a server-side dry-run apply (see drift.py). Without an overlay
the drift column says it was not checked, rather than guessing which overlay is deployed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..catalog import Loaded
from ..errors import ForbiddenError
from .client import Cluster, connect
from .deploy import MANAGED, count, hpa_minimums, orphans, plan_overlay
from .drift import differences
from .overlay import Obj
from .rollout import rollout_of

MISSING = "missing"
HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
NOT_DEPLOYED = "not deployed"  # drift of a service none of whose objects is on the cluster


@dataclass
class ServiceStatus:
    name: str
    wave: int
    desired: int | None  # None: no Deployment on the cluster
    ready: int | None
    rollout: str  # available, progressing, failed or missing
    detail: str
    drift: list[str] | None = None  # None: not checked; [] none; else "Kind/name: path" lines

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class ClusterStatus:
    context: str
    namespace: str
    overlay: str | None
    services: list[ServiceStatus]
    shared_drift: list[str] | None = None  # objects of no service: Namespace, default deny, infrastructure policies
    orphans: list[str] = field(default_factory=list)
    drift_unchecked: list[str] = field(default_factory=list)  # why some drift was not checked (no patch rights)

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "services": [s.as_dict() for s in self.services]}


def cluster_status(loaded: Loaded, *, context: str | None = None, overlay: str | None = None) -> ClusterStatus:
    """Read the cluster; compare it with ``overlay`` if one is given. Raises ClusterError, OverlayError."""
    steps = plan_overlay(loaded, overlay) if overlay else []  # before connecting: a bad overlay needs no cluster
    cluster = connect(context)
    namespace = loaded.catalog.platform.namespace
    cluster.check()
    live = cluster.deployments(namespace, MANAGED)
    floors = hpa_minimums(cluster.labelled(*HPA, namespace, MANAGED))  # the same judgement the deploy waits on
    plan = loaded.plan
    services = []
    for name in (n for w in plan.waves for n in w.services):
        dep = live.get(name)
        if dep is None:
            services.append(ServiceStatus(name, plan.wave_of[name], None, None, MISSING, "no Deployment"))
            continue
        r = rollout_of(dep, floors.get(name))
        ready = dep.status.ready_replicas if dep.status else 0
        services.append(ServiceStatus(name, plan.wave_of[name], dep.spec.replicas, ready or 0, r.state, r.detail))
    status = ClusterStatus(cluster.context, namespace, overlay, services)
    if not steps:
        return status
    objs = [o for s in steps for o in s.objects]
    drift: dict[str | None, list[str]] = {}
    absent: dict[str | None, int] = {}
    forbidden: dict[str, str] = {}  # kind -> the verb refused: drift of that kind cannot be checked
    unchecked: set[str | None] = set()  # services with an object whose drift was not checked
    results = _compare_all(cluster, objs)
    for obj, (outcome, detail) in zip(objs, results, strict=True):
        if (
            outcome == "forbidden"
        ):  # read-only rights (`view`): a dry-run apply is a patch; custom kinds may not be readable
            forbidden[obj.kind] = str(detail)
            unchecked.add(obj.service)
        elif outcome == MISSING:
            drift.setdefault(obj.service, []).append(f"{obj.ref}: {MISSING}")
            absent[obj.service] = absent.get(obj.service, 0) + 1
        elif detail:
            drift.setdefault(obj.service, []).append(f"{obj.ref}: {', '.join(detail)}")
    for s in services:
        mine = sum(1 for o in objs if o.service == s.name)
        if mine and absent.get(s.name) == mine:
            s.drift = [NOT_DEPLOYED]
        else:
            s.drift = None if s.name in unchecked and not drift.get(s.name) else drift.get(s.name, [])
    if forbidden:
        refused = {v: [k for k, verb in sorted(forbidden.items()) if verb == v] for v in ("patch", "get")}
        status.drift_unchecked.append(
            f"drift of {count(len(forbidden), 'kind')}: "
            + " and ".join(f"may not {v} {', '.join(kinds)}" for v, kinds in refused.items() if kinds)
            + ". Drift is found by reading each object and sending it as a server-side dry-run apply, which needs get "
            "and patch "
            f"(check: `kubectl --context {cluster.context} auth can-i patch deployments.apps -n {namespace}`); "
            "replicas, rollout and leftovers need only get and list"
        )
    names = {s.name for s in services}
    status.shared_drift = [line for owner, lines in drift.items() if owner not in names for line in lines]
    try:
        status.orphans = [f"{o.ref}" + (f" ({o.service})" if o.service else "") for o in orphans(cluster, loaded, objs)]
    except ForbiddenError as exc:
        status.drift_unchecked.append(
            f"leftovers (objects the overlay no longer has): listing them needs list on every kind; {exc}"
        )
    return status


DRIFT_WORKERS = 8  # requests in flight: each waits on the API server, so threads overlap them


def _compare(cluster: Cluster, obj: Obj) -> tuple[str, list[str] | str | None]:
    """("paths", the fields that differ) | (MISSING, None) | ("forbidden", the verb refused)."""
    verb = "get"
    try:
        found = cluster.get(obj.api_version, obj.kind, obj.name, obj.namespace)
        if found is None:
            return MISSING, None
        verb = "patch"
        return "paths", differences(found, cluster.apply(obj.body, dry_run=True))
    except ForbiddenError:
        return "forbidden", verb


def _compare_all(cluster: Cluster, objs: list[Obj]) -> list[tuple[str, list[str] | str | None]]:
    """`_compare` for every object, in order, on a few threads (two requests per object, a
    thousand for the full overlay). The first object of each kind goes first: a kind the user
    may not read or patch then costs one refused request, not one per object."""
    for api_version, kind in sorted({(o.api_version, o.kind) for o in objs}):
        cluster.resource(api_version, kind)  # discovery once, before the threads share it
    by_kind: dict[str, list[int]] = {}
    for i, obj in enumerate(objs):
        by_kind.setdefault(obj.kind, []).append(i)
    results: dict[int, tuple[str, list[str] | str | None]] = {}
    with ThreadPoolExecutor(max_workers=DRIFT_WORKERS) as pool:
        firsts = {kind: pool.submit(_compare, cluster, objs[idx[0]]) for kind, idx in by_kind.items()}
        rest = {}
        for kind, idx in by_kind.items():
            results[idx[0]] = first = firsts[kind].result()
            if first[0] == "forbidden":
                results.update(dict.fromkeys(idx[1:], first))
            else:
                rest.update({i: pool.submit(_compare, cluster, objs[i]) for i in idx[1:]})
        results.update({i: future.result() for i, future in rest.items()})
    return [results[i] for i in range(len(objs))]
