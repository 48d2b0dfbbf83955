"""The audit log on both dialects: appended in order with an unbroken hash chain, refused UPDATE and DELETE by
the database itself, and a row altered behind Godel's back (its triggers dropped or disabled, as an attacker with
the database would) found by ``verify`` at exactly that row."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from godel.auth.audit import AuditLog, chain_hash
from godel.core.clock import SystemClock
from godel.store import SqlStore, tables


async def _fill(store: SqlStore, n: int) -> AuditLog:
    audit = AuditLog(store, SystemClock())
    await asyncio.gather(*(audit.record(actor=f"user:u{i}", action="POST /api/v1/agents", outcome="success",
                                        resource=f"agent_id={i}", details={"i": i}) for i in range(n)))  # fmt: skip
    return audit


async def test_concurrent_appends_keep_one_unbroken_chain(store: SqlStore) -> None:
    audit = await _fill(store, 40)
    rows = await store.audit_rows(limit=1000)
    assert [r["seq"] for r in rows] == list(range(1, 41))
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    verdict = await audit.verify(page=7)  # across page boundaries
    assert verdict.ok and verdict.rows == 40


async def test_the_database_refuses_update_delete_and_truncate(store: SqlStore) -> None:
    await _fill(store, 3)
    statements = ["UPDATE audit_log SET actor = 'user:nobody' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 2"]
    if store.dialect == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            async with store.engine.begin() as conn:
                await conn.execute(sa.text(statement))
    assert len(await store.audit_rows(limit=10)) == 3


@pytest.mark.parametrize("tamper", ["alter", "delete", "insert"])
async def test_verify_names_the_first_row_that_was_tampered_with(store: SqlStore, tamper: str) -> None:
    audit = await _fill(store, 6)
    async with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            await conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            await conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
            await conn.execute(sa.text("DROP TRIGGER audit_log_no_delete"))
        if tamper == "alter":
            await conn.execute(sa.text("UPDATE audit_log SET outcome = 'failure' WHERE seq = 4"))
        elif tamper == "delete":
            await conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 4"))
        else:  # a forged row in place of row 4, with a self-consistent hash of its own but not the chain's
            row = (await conn.execute(sa.select(tables.audit_log).where(tables.audit_log.c.seq == 4))).mappings().one()
            await conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 4"))
            forged = dict(row)
            forged["actor"] = "user:mallory"
            forged["hash"] = chain_hash(forged["prev_hash"], forged)
            await conn.execute(tables.audit_log.insert(), forged)
        if store.dialect == "postgresql":
            await conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    verdict = await audit.verify()
    # A forged row 4 hashes well on its own, but row 5 no longer follows it: the chain breaks at 4 or 5.
    assert not verdict.ok and verdict.first_bad == (5 if tamper == "insert" else 4), verdict
