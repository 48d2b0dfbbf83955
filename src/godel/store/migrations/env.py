"""Alembic's environment: run migrations on a connection handed over by the store, or on a URL.

The store passes its own open connection in ``config.attributes["connection"]`` (the normal path). Run from
the command line, a URL is opened with the store's async engine (same pragmas, same driver) and the migration
runs through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from godel.store.engine import WRITE_OPTION, create_engine
from godel.store.tables import metadata

config = context.config


def _include_name(name: str | None, type_: str, _parent: object) -> bool:
    # SQLite's bookkeeping table for AUTOINCREMENT is not ours to manage.
    return not (type_ == "table" and name == "sqlite_sequence")


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, include_name=_include_name)
    with context.begin_transaction():
        context.run_migrations()


async def _run_url(url: str) -> None:
    engine = create_engine(url).execution_options(**{WRITE_OPTION: True})
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = config.attributes.get("connection")
    url = config.get_main_option("sqlalchemy.url")
    if connection is not None:
        _run(connection)
    elif context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    elif url:
        asyncio.run(_run_url(url))
    else:
        raise RuntimeError("no connection and no sqlalchemy.url to migrate")


_main()
