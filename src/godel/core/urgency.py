"""Which writes go first when the store has a queue of them.

The store has one writer at a time (SQLite's write lock; on PostgreSQL the events lock). Under a burst of agents
that writer is busy nearly all the time, and a write waits behind every write queued before it: at 16 agents
at once, about 70 ms at p50. Most of those writes start work or record its progress. A few record an *end*: a
run ended for good, a workflow step completed. Those are the writes other work waits on (a waiter returning, a
dependent step starting, a slot freed), so each one that waits delays everything behind it. A write made inside
``urgent()`` goes before the ordinary writes already queued (in order among the urgent ones); it still waits for
the write in progress, and it never interrupts one.

Kept narrow on purpose: when everything is urgent nothing is. An end is at most one write per run or step. An end
may pass writes other tasks queued before it; within one task order is kept (a run drains its output, then ends).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_urgent: ContextVar[bool] = ContextVar("godel_urgent_write", default=False)


@contextmanager
def urgent() -> Iterator[None]:
    """Writes made inside go before queued ordinary writes. Keep the block to the write itself: a task created
    inside inherits the mark."""
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()
