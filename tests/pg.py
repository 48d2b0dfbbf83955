"""The machine's PostgreSQL, for the tests that run a store or a server against it."""

from __future__ import annotations

import os

import asyncpg

PG_SERVER = os.environ.get("GODEL_TEST_POSTGRES", "postgres@127.0.0.1:5432")


async def pg_admin(sql: str) -> None:
    """Run one statement (CREATE/DROP DATABASE) on the server's maintenance database."""
    conn = await asyncpg.connect(f"postgresql://{PG_SERVER}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
