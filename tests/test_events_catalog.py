"""Events in the catalog: the shipped channels, the graph's event edges, the broker permissions."""

from __future__ import annotations

import json

from conftest import CATALOG, nexus, synthetic

from nexus.catalog import events as ev
from nexus.catalog import load_catalog, load_catalog_text
from nexus.checks import check
from nexus.render import RenderContext, render


def test_shipped_catalog_declares_every_kind_on_the_real_services():
    cat = load_catalog(CATALOG).catalog
    kinds = {name: ch.kind for name, ch in cat.events.items()}
    assert set(kinds.values()) == {"queue", "pubsub", "stream"}
    audit = next(ch for ch in cat.events.values() if ch.kind == "stream")
    assert {"auth-service", "billing-service", "ledger-mgr"} <= set(audit.publishers)
    assert ev.broker(cat) == "nats"


def test_graph_shows_event_edges_with_their_kind():
    data = json.loads(nexus("graph", "--format", "json", "--catalog", str(CATALOG)).stdout)
    got = {(e["service"], e["role"], e["channel"], e["kind"]) for e in data["event_edges"]}
    assert ("billing-service", "publishes", "invoice-requested", "queue") in got
    assert ("invoice-gen", "subscribes", "invoice-requested", "queue") in got
    assert ("puabo-blac-risk-assessment", "subscribes", "audit-trail", "stream") in got
    mermaid = nexus("graph", "--format", "mermaid", "--catalog", str(CATALOG)).stdout
    assert "  s_billing_service ==>|queue| c_invoice_requested\n" in mermaid
    assert "  c_invoice_requested ==>|queue| s_invoice_gen\n" in mermaid
    dot = nexus("graph", "--format", "dot", "--catalog", str(CATALOG)).stdout
    assert '"channel:audit-trail" -> "puabo-blac-risk-assessment" [style=bold, label="stream"];' in dot


def test_a_run_walks_the_event_edges_as_often_whatever_the_number_of_services(monkeypatch):
    """Each service's channels, broker permissions and AsyncAPI document come from one pass over
    the catalog's event edges, not a pass for each service: rendering and checking 300 services
    walk the edges as many times as 100 do. (A pass per service made 10,000 services with 2,000
    channels take 208 s to render, 30 without the channels.)"""
    walks: list[int] = []
    edges = ev.edges
    monkeypatch.setattr(ev, "edges", lambda cat: walks.append(1) or edges(cat))

    def walked(services: int) -> int:
        loaded = load_catalog_text(synthetic(services, channels=services // 5))
        assert len(loaded.catalog.events) == services // 5
        walks.clear()
        ctx = RenderContext(loaded.catalog, loaded.plan)
        check(ctx, render(ctx))
        return len(walks)

    assert 0 < walked(100) == walked(300)
