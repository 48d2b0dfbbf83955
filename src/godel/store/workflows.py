"""The workflow tables: a run and its steps, every change committed together with the event that announces it.

The engine (``godel.workflow.engine``) writes a step's move (pending → running → completed …) and its
``workflow:step:*`` event in one transaction, so after a crash the rows say exactly which steps finished, which
were running (and on which agent), and nothing announced was lost.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from godel.core.events import Event
from godel.core.models import Workflow, WorkflowStep
from godel.core.ports import Page
from godel.errors import ConflictError, FieldError, ValidationError, WorkflowNotFoundError
from godel.store import rows, tables
from godel.store.host import StoreHost

WORKFLOWS = rows.Mapper(Workflow, tables.workflows)
STEPS = rows.Mapper(WorkflowStep, tables.workflow_steps)


def _encode_cursor(wf: Workflow) -> str:
    assert wf.created_at is not None
    raw = json.dumps([wf.created_at.isoformat(), wf.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        stamp, wf_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None or not isinstance(wf_id, str):
            raise ValueError("malformed")
        return at, wf_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValidationError("invalid cursor", [FieldError("cursor", "not a cursor from a previous page")]) from exc


class WorkflowStore:
    """Mixed into ``SqlStore`` (which provides ``_write``, ``_read`` and ``_clock``)."""

    async def create_workflow(
        self: StoreHost, workflow: Workflow, steps: Sequence[WorkflowStep], events: Sequence[Event] = ()
    ) -> Workflow:
        workflow = dataclasses.replace(workflow, created_at=workflow.created_at or self._clock.now())
        async with self._write(events=True) as tx:
            await tx.conn.execute(tables.workflows.insert(), WORKFLOWS.to_row(workflow))
            if steps:
                await tx.conn.execute(tables.workflow_steps.insert(), [STEPS.to_row(s) for s in steps])
            if events:
                await tx.append(events)
        return workflow

    async def get_workflow(self: StoreHost, workflow_id: str) -> Workflow:
        async with self._read() as conn:
            return await _get(conn, workflow_id)

    async def workflow_head(self: StoreHost, workflow_id: str) -> Workflow:
        """The run without the two columns that grow with it, ``definition`` (empty here) and ``results`` (None):
        what the engine's loop reads at every turn, holding the parsed definition itself."""
        t = tables.workflows
        columns = [c for c in t.c if c.name not in ("definition", "results")]
        async with self._read() as conn:
            row = (await conn.execute(sa.select(*columns).where(t.c.id == workflow_id))).first()
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        return WORKFLOWS.from_row({**row._mapping, "definition": {}, "results": None})

    async def list_workflows(
        self: StoreHost, *, statuses: Sequence[str] = (), limit: int = 50, cursor: str | None = None
    ) -> Page[Workflow]:
        t = tables.workflows
        stmt = sa.select(t)
        if statuses:
            stmt = stmt.where(t.c.status.in_(sorted(set(statuses))))
        if cursor:
            at, last = _decode_cursor(cursor)
            stmt = stmt.where(sa.or_(t.c.created_at < at, sa.and_(t.c.created_at == at, t.c.id < last)))
        stmt = stmt.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
        async with self._read() as conn:
            found = WORKFLOWS.from_rows(await conn.execute(stmt))
        more = len(found) > limit
        items = found[:limit]
        return Page(items, _encode_cursor(items[-1]) if more and items else None, more)

    async def workflow_steps(self: StoreHost, workflow_id: str) -> list[WorkflowStep]:
        t = tables.workflow_steps
        async with self._read() as conn:
            return STEPS.from_rows(await conn.execute(sa.select(t).where(t.c.workflow_id == workflow_id)))

    async def workflow_step(self: StoreHost, workflow_id: str, step_id: str) -> WorkflowStep:
        """One step's row (the engine reads the one step whose agent ended, not the whole run)."""
        t = tables.workflow_steps
        async with self._read() as conn:
            stmt = sa.select(t).where(t.c.workflow_id == workflow_id, t.c.step_id == step_id)
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        return STEPS.from_row(row)

    async def update_workflow(
        self: StoreHost,
        workflow_id: str,
        changes: dict[str, Any],
        events: Sequence[Event] = (),
        *,
        expect: Sequence[str] = (),
    ) -> Workflow:
        """Change the run's row (and append ``events``) in one transaction; with ``expect``, only while its status
        is one of those (else ``ConflictError``, nothing written)."""
        t = tables.workflows
        async with self._write(events=True) as tx:
            current = await _get(tx.conn, workflow_id, expect)
            if changes:
                await tx.conn.execute(t.update().where(t.c.id == workflow_id).values(WORKFLOWS.values(changes)))
            if events:
                await tx.append(events)
        return dataclasses.replace(current, **changes)

    async def update_step(
        self: StoreHost,
        workflow_id: str,
        step_id: str,
        changes: dict[str, Any],
        events: Sequence[Event] = (),
        *,
        workflow_changes: dict[str, Any] | None = None,
        step_result: dict[str, Any] | None = None,
        expect: str | Sequence[str] | None = None,
    ) -> bool:
        """A step's move, the run's own changes that go with it, and their events: one transaction. With
        ``expect``, only while the step's status is that one (or one of those): False, nothing written, when it
        moved meanwhile. ``step_result`` is the step's entry in the run's ``results``, merged inside the
        transaction: steps that end together each keep theirs (a read before the write would lose one)."""
        s, w = tables.workflow_steps, tables.workflows
        where = [s.c.workflow_id == workflow_id, s.c.step_id == step_id]
        if expect is not None:
            where.append(s.c.status.in_([expect] if isinstance(expect, str) else list(expect)))
        async with self._write(events=True) as tx:
            done = await tx.conn.execute(s.update().where(*where).values(STEPS.values(changes)))
            if done.rowcount != 1:
                if expect is not None:
                    return False
                raise WorkflowNotFoundError(workflow_id)
            run_changes = dict(workflow_changes or {})
            if step_result is not None:
                results = (await tx.conn.execute(sa.select(w.c.results).where(w.c.id == workflow_id))).scalar()
                run_changes["results"] = {**(results or {}), step_id: step_result}
            if run_changes:
                values = WORKFLOWS.values(run_changes)
                await tx.conn.execute(w.update().where(w.c.id == workflow_id).values(values))
            if events:
                await tx.append(events)
        return True

    async def cancel_workflow(
        self: StoreHost,
        workflow_id: str,
        changes: dict[str, Any],
        events: Sequence[Event],
        step_event: Callable[[WorkflowStep], Event],
        *,
        expect: Sequence[str],
        finished: Sequence[str],
    ) -> tuple[Workflow, list[WorkflowStep]]:
        """End a run and every step of it not yet finished, in one transaction: whoever reads the run afterwards
        finds no step of it still running. Returns the run and the steps that were stopped (as they were)."""
        t, s = tables.workflows, tables.workflow_steps
        async with self._write(events=True) as tx:
            current = await _get(tx.conn, workflow_id, expect)
            rows = STEPS.from_rows(await tx.conn.execute(sa.select(s).where(s.c.workflow_id == workflow_id)))
            stopped = [r for r in rows if r.status not in finished]
            await tx.conn.execute(t.update().where(t.c.id == workflow_id).values(WORKFLOWS.values(changes)))
            if stopped:
                await tx.conn.execute(
                    s.update()
                    .where(s.c.workflow_id == workflow_id, s.c.status.not_in(list(finished)))
                    .values(status="cancelled", completed_at=changes.get("completed_at"))
                )
            await tx.append([*events, *(step_event(r) for r in stopped)])
        return dataclasses.replace(current, **changes), stopped

    async def delete_workflow(
        self: StoreHost, workflow_id: str, events: Sequence[Event] = (), *, expect: Sequence[str] = ()
    ) -> None:
        """Delete the run and its steps (their events stay in the log); with ``expect``, only in those statuses."""
        t = tables.workflows
        async with self._write(events=True) as tx:
            await _get(tx.conn, workflow_id, expect)
            s = tables.workflow_steps
            await tx.conn.execute(s.delete().where(s.c.workflow_id == workflow_id))  # SQLite may not cascade
            await tx.conn.execute(t.delete().where(t.c.id == workflow_id))
            if events:
                await tx.append(events)


async def _get(conn: AsyncConnection, workflow_id: str, expect: Sequence[str] = ()) -> Workflow:
    """The run; with ``expect``, only while its status is one of those (else ``ConflictError``)."""
    t = tables.workflows
    row = (await conn.execute(sa.select(t).where(t.c.id == workflow_id))).first()
    if row is None:
        raise WorkflowNotFoundError(workflow_id)
    current = WORKFLOWS.from_row(row)
    if expect and current.status not in expect:
        raise ConflictError(
            f"workflow {workflow_id} is {current.status}",
            details={"workflowId": workflow_id, "currentStatus": current.status, "expected": list(expect)},
        )
    return current
