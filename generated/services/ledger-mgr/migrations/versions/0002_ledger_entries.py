"""ledger_entries: the ledger, one row per movement between two accounts

Double entry in one row: ``amount_minor`` (in the currency's minor unit, never negative) leaves
``debit_account`` and reaches ``credit_account``. ``reference`` is the id of what moved it (a
payment, a repayment). A critical path's probe (`nexus verify`) books kind ``probe``, which the
constraint holds to an amount of 0: it proves the ledger takes entries without moving money;
balances leave probes out (the partial index serves them).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KINDS = ("payment", "refund", "repayment", "disbursement", "probe")


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("debit_account", sa.String(64), nullable=False),
        sa.Column("credit_account", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in KINDS) + ")", name="ledger_entries_kind"),
        sa.CheckConstraint("amount_minor >= 0", name="ledger_entries_amount"),
        sa.CheckConstraint("kind <> 'probe' OR amount_minor = 0", name="ledger_entries_probe_moves_nothing"),
        sa.CheckConstraint("debit_account <> credit_account", name="ledger_entries_two_accounts"),
    )
    op.create_index(
        "ledger_entries_account_debits",
        "ledger_entries",
        ["debit_account"],
        postgresql_where=sa.text("kind <> 'probe'"),
    )
    op.create_index(
        "ledger_entries_account_credits",
        "ledger_entries",
        ["credit_account"],
        postgresql_where=sa.text("kind <> 'probe'"),
    )


def downgrade() -> None:
    op.drop_table("ledger_entries")
