"""Drift on a cluster: does a live object differ from what applying the generated one would make?

The comparison is the one `kubectl diff` makes: the generated object is sent as a server-side
dry-run apply (field manager ``nexus``, conflicts forced), and the answer is compared with the
live object. The API server does the merging, defaulting and admission exactly as a real apply
would, so there is no false drift from defaults ("500m" vs "0.5") and none from fields other
managers own that Nexus does not set (the replicas an HPA writes, an annotation a controller
adds). What differs is exactly what `nexus deploy` would change. Only bookkeeping is ignored:
status, managedFields, resourceVersion, generation.
"""

from __future__ import annotations

from typing import Any

# Paths that change on every write or belong to controllers, never to the manifest.
IGNORED: frozenset[tuple[str, ...]] = frozenset(
    {
        ("status",),
        ("metadata", "managedFields"),
        ("metadata", "resourceVersion"),
        ("metadata", "generation"),
    }
)


def differences(live: Any, applied: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Dotted paths (``spec.template.spec.containers[0].image``) where the two objects differ."""
    if path in IGNORED:
        return []
    if isinstance(live, dict) and isinstance(applied, dict):
        return [
            d
            for key in sorted(live.keys() | applied.keys())
            for d in differences(live.get(key), applied.get(key), (*path, key))
        ]
    if isinstance(live, list) and isinstance(applied, list) and len(live) == len(applied):
        return [
            d
            for i, (a, b) in enumerate(zip(live, applied, strict=True))
            for d in differences(a, b, (*path[:-1], f"{path[-1]}[{i}]") if path else (f"[{i}]",))
        ]
    return [] if live == applied else [".".join(path) or "(the whole object)"]
