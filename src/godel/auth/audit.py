"""The audit log: every state-changing call and every authentication event, append-only and hash-chained.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's own fields in a canonical JSON form, so
altering, inserting or deleting a row anywhere breaks the chain from that row on; ``verify`` walks it and reports
the first row whose hash does not match. The tables refuse UPDATE and DELETE by trigger (SQLite and PostgreSQL),
and no code path of Godel issues either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from godel.core.ports import Clock
from godel.store.auth import GENESIS

_FIELDS = ("seq", "at", "actor", "action", "resource", "outcome", "status_code", "request_id", "client", "details")


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


def chain_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    body = json.dumps({f: _canonical(row.get(f)) for f in _FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, default=str)  # fmt: skip
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rows: int
    first_bad: int | None = None  # the seq of the first row that does not hold
    reason: str | None = None


@dataclass
class AuditLog:
    store: Any  # AuthQueries
    clock: Clock

    async def record(
        self, *, actor: str, action: str, outcome: str, resource: str | None = None, status_code: int | None = None,
        request_id: str | None = None, client: str | None = None, details: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        entry = {
            "at": self.clock.now(), "actor": actor[:255], "action": action[:100], "resource": resource,
            "outcome": outcome, "status_code": status_code, "request_id": request_id,
            "client": (client or "")[:255] or None, "details": dict(details) if details else None,
        }  # fmt: skip
        return (await self.store.append_audit([entry], chain_hash))[0]

    async def verify(self, page: int = 5000) -> Verdict:
        """Walk the whole chain in order; the first row that was altered, inserted or removed fails it."""
        prev, expected_seq, count, after = GENESIS, 1, 0, 0
        while True:
            rows = await self.store.audit_rows(after=after, limit=page)
            for row in rows:
                count += 1
                if row["seq"] != expected_seq:
                    return Verdict(False, count, expected_seq, f"row {expected_seq} is missing (next is {row['seq']})")
                if row["prev_hash"] != prev:
                    return Verdict(False, count, row["seq"], "prev_hash does not match the row before")
                if chain_hash(prev, row) != row["hash"]:
                    return Verdict(False, count, row["seq"], "the row's content does not match its hash")
                prev, expected_seq, after = row["hash"], expected_seq + 1, row["seq"]
            if len(rows) < page:
                return Verdict(True, count)
