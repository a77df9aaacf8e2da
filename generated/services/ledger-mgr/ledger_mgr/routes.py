# Yours: nexus created this file once and never touches it again. Add the team's routes here.
"""ledger-mgr's own endpoints. Health, metrics, flows and dependency clients come
from nexus_runtime; call a dependency with `request.app.state.clients["<name>"]`.

On the payment flow, this hop books a ledger entry (migrations/versions/0002) instead of the
runtime's flow record: the path is proven to reach the ledger itself."""

from nexus_runtime import Postgres, ServiceRouter, Written
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

router = ServiceRouter(prefix="/api", tags=["ledger-mgr"])

# a probe moves nothing (the table's constraint holds it to 0) between two accounts of its own
BOOK_PROBE = text(
    "INSERT INTO ledger_entries (kind, reference, debit_account, credit_account, amount_minor, currency)"
    " VALUES ('probe', :reference, 'nexus:verify:source', 'nexus:verify:sink', 0, 'USD') RETURNING id"
)
READ_ENTRY = text("SELECT reference FROM ledger_entries WHERE id = :id")


@router.data_step("postgres")
async def ledger_entry(db: Postgres, flow: str, request_id: str) -> Written:
    """A zero-amount probe entry with the request's id as its reference, read back by its id."""

    async def book(conn: AsyncConnection) -> Written:
        entry = (await conn.execute(BOOK_PROBE, {"reference": request_id})).scalar_one()
        reference = (await conn.execute(READ_ENTRY, {"id": entry})).scalar_one_or_none()
        return Written(f"ledger_entries {entry}", reference)

    return await db.run(book)


@router.get("/info")
async def info() -> dict[str, str]:
    return {"service": "ledger-mgr"}
