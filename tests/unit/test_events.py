import pytest

from godel.core.events import (
    EventFilter,
    make_event,
    matches,
    matches_any,
    sql_like_prefixes,
    validate_pattern,
)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("agent:*", "agent:start", True),
        ("agent:*", "agent:tool:call", True),
        ("agent:*", "agent", False),
        ("agent:*", "team:start", False),
        ("agent:start", "agent:start", True),
        ("agent:start", "agent:started", False),
        ("workflow:step:*", "workflow:step:start", True),
        ("workflow:step:*", "workflow:start", False),
        ("workflow:*:start", "workflow:step:start", True),
        ("workflow:*:start", "workflow:step:complete", False),
        ("workflow:*:start", "workflow:a:b:start", False),
        ("*", "anything:at:all", True),
        ("team:complete", "team:complete:x", False),
    ],
)
def test_pattern_semantics(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


def test_lists_of_patterns_and_empty_list_matches_all() -> None:
    assert matches_any(["agent:complete", "agent:error"], "agent:error")
    assert not matches_any(["agent:complete", "agent:error"], "agent:start")
    assert matches_any([], "x:y")


@pytest.mark.parametrize("bad", ["", "agent::start", ":agent", "agent:", "agent:st*"])
def test_malformed_patterns_are_reported(bad: str) -> None:
    assert validate_pattern(bad) is not None


def test_filter_combines_patterns_and_ids() -> None:
    e = make_event("agent:start", component="t", agent_id="a1", team_id="t1")
    assert EventFilter(patterns=("agent:*",), agent_id="a1").accepts(e)
    assert not EventFilter(patterns=("agent:*",), agent_id="a2").accepts(e)
    assert not EventFilter(team_id="t2").accepts(e)
    assert not EventFilter(patterns=("team:*",)).accepts(e)


def test_sql_prefixes() -> None:
    assert sql_like_prefixes(["agent:*", "workflow:*:start"]) == ["agent:", "workflow:"]
    assert sql_like_prefixes(["agent:*", "*"]) is None
