"""The overlay stage of a deploy: build a kustomize overlay, then put its objects in apply order.

Pure apart from running `kubectl kustomize`: nothing here talks to a cluster, so
`nexus deploy --dry-run=client` is this module and a printer.

The order: cluster-scoped objects (the Namespace first) in a setup step, then the namespaced
objects wave by wave from their ``argocd.argoproj.io/sync-wave`` annotation, which the k8s
renderer writes from the plan; `check_waves` holds them to the plan, so a stale overlay cannot
deploy in the wrong order. Inside a step, objects go by KIND_RANK, then kind, then name.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from ..catalog.plan import Plan
from ..errors import OverlayError
from ..yamlread import FAST_LOADER

WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
NAME_LABEL = "app.kubernetes.io/name"
KUSTOMIZE_TIMEOUT = 120  # seconds; a local build, but a remote base could hang on the network

# Inside a step, what a Deployment uses exists before it, and what points at it comes after.
# NetworkPolicy precedes workloads: under the namespace's default deny, a pod started before its
# allow policy cannot reach its dependencies, and its readiness probe may fail on that.
# Kinds not listed go after these, by kind and name (the rank table of lightkube and Helm).
KIND_RANK: dict[str, int] = {
    kind: rank
    for rank, kind in enumerate(
        (
            "Namespace",
            "CustomResourceDefinition",
            "PriorityClass",
            "StorageClass",
            "ClusterRole",
            "ClusterRoleBinding",
            "ResourceQuota",
            "LimitRange",
            "NetworkPolicy",
            "ServiceAccount",
            "Secret",
            "ConfigMap",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "Service",
            "StatefulSet",
            "Deployment",
            "DaemonSet",
            "Job",
            "CronJob",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Ingress",
        )
    )
}


@dataclass(frozen=True, eq=False)
class Obj:
    """One object of a built overlay, as kustomize wrote it."""

    body: dict[str, Any]

    @property
    def api_version(self) -> str:
        return str(self.body["apiVersion"])

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        """None for a cluster-scoped object: kustomize sets the namespace on every namespaced one."""
        namespace = self.body["metadata"].get("namespace")
        return None if namespace is None else str(namespace)

    @property
    def service(self) -> str | None:
        return (self.body["metadata"].get("labels") or {}).get(NAME_LABEL)

    @cached_property
    def wave(self) -> int:
        raw = (self.body["metadata"].get("annotations") or {}).get(WAVE_ANNOTATION, "0")  # Argo CD's default
        try:
            return int(raw)
        except ValueError:
            raise OverlayError(
                f"{self.ref}: annotation {WAVE_ANNOTATION} is {raw!r}; it must be a whole number"
            ) from None

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity on a cluster: group, kind, namespace, name (the version may change)."""
        group = self.api_version.rpartition("/")[0]
        return (group, self.kind, self.namespace or "", self.name)

    def rank(self) -> tuple[int, str, str]:
        return (KIND_RANK.get(self.kind, len(KIND_RANK)), self.kind, self.name)


@dataclass(frozen=True)
class Step:
    """What is applied together and, for a wave, waited for before the next step."""

    wave: int | None  # None: the setup step of cluster-scoped objects
    stage: str  # the stage title from the plan, "" for a wave the plan does not have
    objects: tuple[Obj, ...]

    @property
    def label(self) -> str:
        """For columns: "setup", "wave  7", "wave 12"."""
        return "setup" if self.wave is None else f"wave {self.wave:>2}"

    @property
    def name(self) -> str:
        """For sentences: "setup", "wave 7"."""
        return "setup" if self.wave is None else f"wave {self.wave}"

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted({o.service for o in self.objects if o.service}))


def build(folder: str | Path) -> list[Obj]:
    """Build an overlay with `kubectl kustomize`. Raises OverlayError if it cannot be built."""
    folder = Path(folder)
    if not any((folder / n).is_file() for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
        raise OverlayError(f"{folder}: no kustomization.yaml here; run `nexus generate` to write the overlays")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise OverlayError("kubectl is not on PATH; it builds the overlay (`kubectl kustomize`): install kubectl")
    # The one shell-out of a deploy, on purpose: kustomize defines the overlays and kubectl carries
    # the reference kustomize. Everything that talks to a cluster goes through the kubernetes client.
    try:
        proc = subprocess.run(
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=KUSTOMIZE_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise OverlayError(f"{folder}: `kubectl kustomize` did not finish in {KUSTOMIZE_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise OverlayError(f"{folder}: `kubectl kustomize` failed: {proc.stderr.strip()}")
    try:
        docs = [d for d in yaml.load_all(proc.stdout, Loader=FAST_LOADER) if d]  # libyaml: 530 objects in 0.3 s, not 3
    except yaml.YAMLError as exc:
        raise OverlayError(f"{folder}: `kubectl kustomize` printed YAML that does not parse: {exc}") from exc
    objs = [Obj(d) for d in docs if isinstance(d, dict)]
    bad = [
        str(i)
        for i, o in enumerate(objs)
        if not {"apiVersion", "kind"} <= o.body.keys() or not (o.body.get("metadata") or {}).get("name")
    ]
    if bad:
        raise OverlayError(f"{folder}: objects {', '.join(bad)} of the build lack apiVersion, kind or metadata.name")
    return objs


def check_waves(objs: Iterable[Obj], plan: Plan) -> None:
    """Every object of a planned service must carry that service's wave; raise OverlayError if not."""
    wrong = [
        f"  {o.ref} ({o.service}): sync-wave {o.wave}, the plan says {plan.wave_of[o.service]}"
        for o in objs
        if o.service in plan.wave_of and o.wave != plan.wave_of[o.service]
    ]
    if wrong:
        raise OverlayError(
            "the overlay's sync-waves disagree with the catalog's plan (run `nexus generate`):\n" + "\n".join(wrong)
        )


def order(objs: Iterable[Obj], plan: Plan, titles: dict[str, str] | None = None) -> list[Step]:
    """Group objects into the setup step and one step per wave, each in apply order."""
    objs = list(objs)
    titles = titles or {}
    stage_of_wave = {w.number: titles.get(w.stage, w.stage) for w in plan.waves}
    setup = sorted((o for o in objs if o.namespace is None), key=Obj.rank)
    waves: dict[int, list[Obj]] = {}
    for o in objs:
        if o.namespace is not None:
            waves.setdefault(o.wave, []).append(o)
    steps = [Step(None, "", tuple(setup))] if setup else []
    steps += [Step(n, stage_of_wave.get(n, ""), tuple(sorted(waves[n], key=Obj.rank))) for n in sorted(waves)]
    return steps


def select(steps: list[Step], wave: int | None = None, only: Iterable[str] = ()) -> list[Step]:
    """Keep one wave and/or some services. The setup step always stays: nothing lands without it."""
    only = set(only)
    known = {s for step in steps for s in step.services}
    if unknown := sorted(only - known):
        raise OverlayError(
            f"--only {', '.join(unknown)}: not a service of this overlay (it has: {', '.join(sorted(known))})"
        )
    waves = [s.wave for s in steps if s.wave is not None]
    if wave is not None and wave not in waves:
        raise OverlayError(f"--wave {wave}: the overlay has no such wave (it has: {', '.join(map(str, waves))})")
    kept = []
    for step in steps:
        if step.wave is not None and wave is not None and step.wave != wave:
            continue
        objects = step.objects if step.wave is None or not only else tuple(o for o in step.objects if o.service in only)
        if objects:
            kept.append(Step(step.wave, step.stage, objects))
    return kept


def describe(steps: list[Step]) -> list[str]:
    """The ordered plan as lines for people: a line per step, then its objects, indented."""
    lines = []
    for step in steps:
        head = f"{step.label}  {step.stage}".rstrip()
        lines.append(f"{head}: {', '.join(step.services)}" if step.services else head)
        lines += [f"    {o.ref}" for o in step.objects]
    return lines
