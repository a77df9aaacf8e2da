"""The generated AsyncAPI 3.0 documents (one per service with events, one for the platform) are
valid by the official AsyncAPI parser, and say what the catalog says."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import CATALOG, ROOT
from tools import asyncapi_parser

from nexus.catalog import events as ev
from nexus.catalog import load_catalog

FOLDER = ROOT / "generated" / "docs" / "asyncapi"
SCRIPT = Path(__file__).with_name("asyncapi_validate.cjs")


def parse(*files: Path) -> dict[str, list[str]]:
    node, modules = asyncapi_parser()
    result = subprocess.run(
        [node, str(SCRIPT), str(modules), *map(str, files)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return {Path(k).name: v for k, v in json.loads(result.stdout).items()}


def test_every_generated_document_is_valid_and_a_broken_one_is_not(tmp_path: Path) -> None:
    docs = sorted(FOLDER.glob("*.json"))
    cat = load_catalog(CATALOG).catalog
    assert {d.stem for d in docs} == {*ev.participants(cat), "platform"}
    for name, key, value in [("action", "action", "publish"), ("ref", "channel", {"$ref": "#/channels/nope"})]:
        broken = json.loads((FOLDER / "billing-service.json").read_text())
        next(iter(broken["operations"].values()))[key] = value  # 'publish': AsyncAPI 2's word, 3.0 says send
        (tmp_path / f"broken-{name}.json").write_text(json.dumps(broken))
    errors = parse(*docs, tmp_path / "broken-action.json", tmp_path / "broken-ref.json")
    assert {name: e for name, e in errors.items() if e and not name.startswith("broken")} == {}
    assert any("action" in e and "send" in e for e in errors["broken-action.json"]), errors["broken-action.json"]
    assert any("'#/channels/nope' does not exist" in e for e in errors["broken-ref.json"]), errors["broken-ref.json"]


def test_documents_say_what_the_catalog_says() -> None:
    cat = load_catalog(CATALOG).catalog
    platform = json.loads((FOLDER / "platform.json").read_text())
    assert platform["asyncapi"] == "3.0.0"
    want = {(e["service"], "send" if e["role"] == "publishes" else "receive", e["channel"]) for e in ev.edges(cat)}
    got = {
        (op["summary"].split()[0], op["action"], op["channel"]["$ref"].rsplit("/", 1)[1])
        for op in platform["operations"].values()
    }
    assert got == want
    invoice = json.loads((FOLDER / "invoice-gen.json").read_text())
    assert set(invoice["operations"]) == {"receive_invoice-requested"}
    assert invoice["channels"]["invoice-requested"]["address"] == "events.invoice-requested.v1"
    schema = invoice["components"]["schemas"]["InvoiceRequestedV1"]
    assert schema["properties"]["payment_id"] == {"type": "string", "format": "uuid"}
    assert schema["properties"]["lines"] == {"type": "array", "items": {"type": "string"}}
    upload = json.loads((FOLDER / "content-management.json").read_text())["components"]["schemas"]
    assert "title" not in upload["UploadReceivedV1"]["required"]  # string?: optional
