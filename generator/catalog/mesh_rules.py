"""Catalog rules that depend on the chosen mesh (part of the graph pass in validate.py).

Linkerd sets timeouts, retries and failure accrual per destination Service (annotations its
client proxies read), not per caller: all the edges into one service must then agree. Istio
can say it per caller (a VirtualService route and a DestinationRule per calling workload), so
it has no such rule. Connection-pool limits have no Linkerd form and are not compared.
"""

from __future__ import annotations

from collections.abc import Callable

from .models import Catalog

# the settings Linkerd carries, per destination Service
LINKERD_PER_TARGET = ("timeout", "retries", "consecutive_5xx", "ejection_time")

Report = Callable[[tuple[str | int, ...], str], None]


def check(cat: Catalog, report: Report) -> None:
    """Report (path, message) for every edge whose settings Linkerd cannot express."""
    if cat.platform.mesh != "linkerd":
        return
    callers: dict[str, list[str]] = {}
    for source in sorted(cat.services):
        for target in sorted(cat.services[source].depends_on):
            if target in cat.services and target != source:
                callers.setdefault(target, []).append(source)
    for target, sources in sorted(callers.items()):
        first = sources[0]
        want = cat.traffic_for(first, target)
        for source in sources[1:]:
            got = cat.traffic_for(source, target)
            diff = [f for f in LINKERD_PER_TARGET if getattr(got, f) != getattr(want, f)]
            if diff:
                shown = ", ".join(f"{f} {getattr(got, f)} vs {getattr(want, f)}" for f in diff)
                report(
                    ("services", source, "depends_on", target),
                    "Linkerd sets timeouts, retries and circuit breaking per destination service, and the edges into "
                    f"'{target}' "
                    f"disagree ({source} -> {target} vs {first} -> {target}: {shown}); give every edge into "
                    f"'{target}' the same "
                    f"values, or use mesh: istio, which sets them per caller",
                )
