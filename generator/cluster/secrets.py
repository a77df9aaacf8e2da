"""Credentials in the cluster: the Secrets the manifests reference by name and never contain.

The generated pods mount each password as a file from a Secret (naming.secret): an internal
server's administrator (``postgres``) and each of its users (``postgres.ledger-mgr``). Those are
Nexus's to make: before a step applies a workload that mounts one, `nexus deploy` creates each
missing one with a random password and never changes or deletes an existing one (a new password
would lock a service out of what the server keeps under the old one). A managed PostgreSQL's
users are Nexus's too (its provisioning Job makes their roles); its administrator's Secret
(catalog: ``external.secret``), and every Secret of another managed instance, are its owners'
to make: a missing one stops the deploy before the step.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..catalog import naming
from ..catalog.models import Catalog
from ..errors import ApplyError
from ..render.infrastructure import MANAGED_PROVISIONING
from .client import Cluster
from .overlay import Obj

KEY = "password"  # the one key each Secret Nexus makes holds; the manifests mount it by this name
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def referenced(objs: Iterable[Obj]) -> dict[str, tuple[str, set[str]]]:
    """Secret name -> (namespace, the keys mounted), for every Secret the workloads among ``objs`` mount."""
    out: dict[str, tuple[str, set[str]]] = {}
    for obj in objs:
        if obj.kind not in WORKLOADS:
            continue
        pod = ((obj.body.get("spec") or {}).get("template") or {}).get("spec") or {}
        for volume in pod.get("volumes") or []:
            sources = [*((volume.get("projected") or {}).get("sources") or []), volume]
            for source in sources:
                secret = source.get("secret") or {}
                name = secret.get("name") or secret.get("secretName")
                if name:
                    keys = out.setdefault(name, (str(obj.namespace), set()))[1]
                    keys.update(item["key"] for item in secret.get("items") or [{"key": KEY}])
    return out


def ours(cat: Catalog) -> set[str]:
    """The Secrets Nexus creates: those of the components it runs (no ``external:``), and the
    users' of a managed instance it provisions (MANAGED_PROVISIONING)."""
    out = set()
    for comp, infra in cat.infrastructure.items():
        users = {naming.secret(comp, n) for n in cat.users_of(comp)}
        if infra.external is None:
            out |= {naming.secret(comp), *users}
        elif infra.engine in MANAGED_PROVISIONING:
            out |= users
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
    admins = {infra.external.secret for infra in cat.infrastructure.values() if infra.external is not None}
    problems, missing_ours = [], []
    for name, (namespace, keys) in sorted(referenced(objs).items()):
        live = cluster.get("v1", "Secret", name, namespace)
        if live is not None:
            missing = sorted(keys - set(live.get("data") or {}))
            if missing:
                problems.append(
                    f"Secret {namespace}/{name} has no key {', '.join(map(repr, missing))}; add it or delete the Secret"
                )
            done.present.append(name)
        elif name in mine:
            missing_ours.append((name, namespace))
        elif name in admins:
            problems.append(
                f"Secret {namespace}/{name} does not exist: its managed instance's owners create it, with its "
                f"administrator's {' and '.join(sorted(keys))}"
            )
        else:
            problems.append(
                f"Secret {namespace}/{name} does not exist: its managed instance's owners create it, with the "
                f"service's password under the key {KEY!r}"
            )
    if problems:
        raise ApplyError("; ".join(problems) + "; nothing of this step was applied")
    # only once every Secret of the step is known to be there or ours to make
    for name, namespace in missing_ours:
        if cluster.create(body(name, namespace, cat.platform.name), dry_run=dry_run):
            done.created.append(name)
        else:
            done.present.append(name)
    return done
