# Yours: nexus created this file once and never touches it again.
"""Alembic's environment: the migrations of auth-service.

They run on its own database, as its own role.

The URL is never read from a file: `nexus up` and the Kubernetes init container hand it over
(nexus_runtime.migrate), from the same POSTGRES_URL the service reads.
"""

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Your models' MetaData, for `alembic revision --autogenerate`; None: write migrations by hand.
target_metadata = None


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = create_async_engine(context.config.attributes["url"], poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.attributes["url"], target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
