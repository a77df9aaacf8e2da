# Yours: nexus created this file once and never touches it again.
"""flow_records: what a critical path through puabo-nexus
writes and reads back

The runtime's flow hop records each call here (nexus_runtime.resources), so `nexus verify`
proves the path reaches this service's own database, not only its process.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_records",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("flow", sa.String(63), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("flow_records")
