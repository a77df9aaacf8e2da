"""Kustomize overlays built in a test folder, shaped like the k8s renderer's output.

Per service: ServiceAccount, ConfigMap <name>-config, Service, Deployment, HPA, PDB and
NetworkPolicy, each annotated with the service's wave from the plan; plus the Namespace and a
default deny (wave 0) and one ingress policy per infrastructure component (its wave). Documents
are written in an order that is not the apply order, so ordering is the code's doing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nexus.catalog import Loaded

WAVE = "argocd.argoproj.io/sync-wave"


def _meta(name: str, namespace_labels: dict[str, str], wave: int, service: str | None = None) -> dict[str, Any]:
    labels = dict(namespace_labels)
    if service:
        labels["app.kubernetes.io/name"] = service
    return {"name": name, "labels": labels, "annotations": {WAVE: str(wave)}}


def service_objects(
    name: str, wave: int, common: dict[str, str], image: str = "registry.example.com/x:1", min_replicas: int = 1
) -> list[dict[str, Any]]:
    m = lambda obj_name: _meta(obj_name, common, wave, name)  # noqa: E731
    pod_labels = {**common, "app.kubernetes.io/name": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": m(name),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {"serviceAccountName": name, "containers": [{"name": name, "image": image}]},
                },
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": m(name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": m(name),
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": m(name),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": min_replicas,
                "maxReplicas": max(2, min_replicas),
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": m(name),
            "spec": {
                "selector": {"app.kubernetes.io/name": name},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            },
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": m(f"{name}-config"), "data": {"SERVICE_NAME": name}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": m(name)},
    ]


def write_overlay(
    root: Path,
    loaded: Loaded,
    overlay: str = "dev",
    waves: dict[str, int] | None = None,
    image: str = "registry.example.com/x:1",
    images: dict[str, str] | None = None,
    min_replicas: int = 1,
) -> Path:
    """Write generated/k8s/{base,overlays/<overlay>} under ``root``; ``waves`` overrides plan waves,
    ``images`` the image of some services (e.g. one the testbed's kubelet crash-loops)."""
    cat, plan = loaded.catalog, loaded.plan
    wave_of = {**plan.wave_of, **(waves or {})}
    common = {"app.kubernetes.io/managed-by": "nexus", "app.kubernetes.io/part-of": cat.platform.name}
    base = root / "generated" / "k8s" / "base"
    (base / "services").mkdir(parents=True, exist_ok=True)
    files = []
    for name in sorted(cat.services, reverse=True):
        path = base / "services" / f"{name}.yaml"
        objects = service_objects(name, wave_of[name], common, (images or {}).get(name, image), min_replicas)
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        files.append(f"services/{name}.yaml")
    infra = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(f"{c}-ingress", common, wave_of[c], c),
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": c}}},
        }
        for c in sorted(cat.infrastructure)
    ]
    (base / "infrastructure.yaml").write_text(yaml.safe_dump_all(infra, sort_keys=False))
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("default-deny", common, 0),
        "spec": {"podSelector": {}},
    }
    (base / "default-deny.yaml").write_text(yaml.safe_dump(deny, sort_keys=False))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(cat.platform.namespace, common, 0)}
    (base / "namespace.yaml").write_text(yaml.safe_dump(namespace, sort_keys=False))
    files += ["infrastructure.yaml", "default-deny.yaml", "namespace.yaml"]
    (base / "kustomization.yaml").write_text(
        yaml.safe_dump({"namespace": cat.platform.namespace, "resources": files}, sort_keys=False)
    )
    folder = root / "generated" / "k8s" / "overlays" / overlay
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../../base"], "labels": [{"pairs": {"nexus.dev/environment": overlay}}]})
    )
    return folder
