"""Retry policy: exponential backoff with a cap. Kept pure so it is tested without a clock."""

from __future__ import annotations

from datetime import datetime, timedelta


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2·base, 4·base … capped."""
    if attempt < 1:
        return 0.0
    return float(min(cap, base * (2 ** (attempt - 1))))


def next_attempt_at(now: datetime, attempt: int, *, base: float, cap: float) -> datetime:
    return now + timedelta(seconds=backoff_delay(attempt, base=base, cap=cap))
