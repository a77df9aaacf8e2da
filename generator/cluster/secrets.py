"""Credentials in the cluster: the Secrets the manifests reference by name and never contain.

The generated pods mount each password as a file from a Secret (naming.secret): an internal
server's administrator (``postgres``) and each of its users (``postgres.ledger-mgr``). Those are
Nexus's to make: before a step applies a workload that mounts one, `nexus deploy` creates each
missing one with a random password and never changes or deletes an existing one (a new password
would lock a service out of what the server keeps under the old one). A Secret of a managed
(external) instance is its owners' to make: a missing one stops the deploy before the step.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..catalog import naming
from ..catalog.models import Catalog
from ..errors import ApplyError
from .client import Cluster
from .overlay import Obj

KEY = "password"  # the one key every such Secret holds; the manifests mount it by this name
WORKLOADS = ("Deployment", "StatefulSet")


def referenced(objs: Iterable[Obj]) -> dict[str, str]:
    """Secret name -> namespace, for every Secret the workloads among ``objs`` mount."""
    out: dict[str, str] = {}
    for obj in objs:
        if obj.kind not in WORKLOADS:
            continue
        pod = ((obj.body.get("spec") or {}).get("template") or {}).get("spec") or {}
        for volume in pod.get("volumes") or []:
            sources = [*((volume.get("projected") or {}).get("sources") or []), volume]
            for source in sources:
                name = (source.get("secret") or {}).get("name") or (source.get("secret") or {}).get("secretName")
                if name:
                    out[name] = str(obj.namespace)
    return out


def ours(cat: Catalog) -> set[str]:
    """The Secrets Nexus creates: those of the components it runs (no ``external:``)."""
    out = set()
    for comp, infra in cat.infrastructure.items():
        if infra.external is None:
            out.add(naming.secret(comp))
            out |= {naming.secret(comp, n) for n in cat.users_of(comp)}
    return out


def body(name: str, namespace: str, part_of: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            # not managed-by=nexus: nothing Nexus prunes or reports as drift
            "labels": {"app.kubernetes.io/part-of": part_of, "app.kubernetes.io/created-by": "nexus-deploy"},
            "annotations": {
                "nexus.dev/note": "a random password nexus deploy created once; Nexus never changes or deletes it"
            },
        },
        # hex: nothing a URL, a config file, psql's \set or a shell would need to escape
        "stringData": {KEY: secrets.token_hex(24)},
    }


@dataclass
class Ensured:
    created: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def ensure(cluster: Cluster, cat: Catalog, objs: Iterable[Obj], *, dry_run: bool = False) -> Ensured:
    """Create what ``objs`` mount and Nexus owns; check the rest exists. ApplyError names what is
    missing or unusable before anything of the step is applied."""
    done = Ensured()
    mine = ours(cat)
    problems = []
    for name, namespace in sorted(referenced(objs).items()):
        live = cluster.get("v1", "Secret", name, namespace)
        if live is not None:
            if KEY not in (live.get("data") or {}):
                problems.append(f"Secret {namespace}/{name} has no key {KEY!r}; add it or delete the Secret")
            done.present.append(name)
        elif name in mine:
            if cluster.create(body(name, namespace, cat.platform.name), dry_run=dry_run):
                done.created.append(name)
            else:
                done.present.append(name)
        else:
            problems.append(
                f"Secret {namespace}/{name} does not exist: its managed instance's owners create it, with the "
                f"service's password under the key {KEY!r}"
            )
    if problems:
        raise ApplyError("; ".join(problems) + "; nothing of this step was applied")
    return done
