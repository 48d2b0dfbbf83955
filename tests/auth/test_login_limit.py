"""Password guessing is held to ten tries a minute per user name, exactly: the O(1) sliding-window counter the API's
own limit uses weights the last window's count by how much of it is left, so ten tries at the very end of one
minute let more through at the start of the next. The login limit keeps every try's time instead."""

from __future__ import annotations

import time

import pytest
from limits.aio.storage import MemoryStorage

from godel.api.access import ApiRateLimit
from godel.errors import RateLimitedError


async def _allowed(limit: ApiRateLimit, now: list[float], at: float, tries: int) -> int:
    now[0] = at
    allowed = 0
    for _ in range(tries):
        try:
            await limit.hit("carol")
            allowed += 1
        except RateLimitedError:
            pass
    return allowed


@pytest.mark.parametrize("exact", [True, False])
async def test_ten_tries_at_a_minutes_end_leave_none_for_the_next_minute(
    monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    edge = 60.0 * (int(time.time() // 60) + 10)  # a whole minute, where the counter's windows turn over
    now = [edge - 0.5]
    monkeypatch.setattr(time, "time", lambda: now[0])  # the storage's clock (it reads time.time)
    limit = ApiRateLimit("10/minute", MemoryStorage(), exact=exact)
    assert await _allowed(limit, now, edge - 0.5, 10) == 10
    after_the_edge = await _allowed(limit, now, edge + 0.5, 5)
    if not exact:
        assert after_the_edge > 0  # the approximation this test exists to keep away from passwords
        return
    assert after_the_edge == 0  # what the login limit uses: ten tries in any minute, no more
    assert await _allowed(limit, now, edge + 59.0, 1) == 0
    assert await _allowed(limit, now, edge + 60.0, 12) == 10  # a minute after the tries, ten more
