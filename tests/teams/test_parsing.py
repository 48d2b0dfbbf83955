"""The formats agents answer in: a coordinator's subtasks, a reviewer's verdict, a monitor's health line."""

from __future__ import annotations

import pytest

from godel.teams.parsing import FormatError, parse_health, parse_subtasks, parse_verdict


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ('["a", "b"]', ["a", "b"]),
        ('Plan:\n```json\n["a", "b", "c"]\n```\n', ["a", "b", "c"]),
        ('```\n["only"]\n```', ["only"]),
        ('First ```json\n["old"]\n``` then ```json\n["new"]\n```', ["new"]),  # the last fenced list counts
        ('I would split it as ["x", "y"] and that is all.', ["x", "y"]),
        ('[{"title": "T", "task": "do t"}, {"task": "do u"}]', ["T: do t", "do u"]),
        ("[]", []),
        ('{"tasks": ["a"]}', ["a"]),  # the list inside, found between the first [ and the last ]
        ('  [" padded "]  ', ["padded"]),
    ],
)
def test_subtasks_are_read_from_fenced_or_bare_json(text: str, items: list[str]) -> None:
    assert parse_subtasks(text) == items


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "gave no answer"),
        (None, "gave no answer"),
        ("I think we should do a and b.", "no JSON list of subtasks"),
        ('["a", 3]', "subtask 1 is not a non-empty string"),
        ('["a", ""]', "subtask 1 is not a non-empty string"),
        ('[{"title": "no task"}]', "subtask 0"),
    ],
)
def test_bad_splits_fail_clearly(text: str | None, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_subtasks(text)


@pytest.mark.parametrize(
    ("text", "approve", "feedback"),
    [
        ("Looks fine.\nVERDICT: approve", True, "Looks fine."),
        ("Missing tests.\nVERDICT: reject", False, "Missing tests."),
        ("verdict: APPROVE", True, ""),
        ("**VERDICT: reject**\nAdd docs.", False, "Add docs."),
        ("VERDICT: reject\nfixed later\nVERDICT: approve", True, "fixed later"),  # the last verdict line counts
        ('{"verdict": "reject", "feedback": "no tests"}', False, "no tests"),
        ('Review:\n```json\n{"verdict": "approve", "reason": "ok"}\n```', True, "ok"),
    ],
)
def test_verdicts(text: str, approve: bool, feedback: str) -> None:
    verdict = parse_verdict(text)
    assert (verdict.approve, verdict.feedback, verdict.word) == (approve, feedback, "approve" if approve else "reject")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I approve of this.",  # prose is not a verdict
        "VERDICT: maybe",
        "The verdict: approve it later",  # not a line of its own
        '{"verdict": "sure"}',
    ],
)
def test_no_verdict_is_never_an_approval(text: str) -> None:
    with pytest.raises(FormatError, match=r"verdict|no answer"):
        parse_verdict(text)


def test_health() -> None:
    assert parse_health("all good\nHEALTH: ok") == "ok"
    assert parse_health("HEALTH: alert\n") == "alert"
    assert parse_health("fine") is None and parse_health(None) is None
