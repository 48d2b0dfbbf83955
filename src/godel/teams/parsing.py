"""Reading agents' answers: a coordinator's list of subtasks, a reviewer's verdict, a monitor's health line.

Subtasks (``parse_subtasks``): a JSON list, taken from the last fenced code block of the answer that holds
one (```json … ``` or a plain fence), else from the whole answer, else from the text between its first ``[``
and its last ``]``. Each item is a string, or an object with a string ``task`` (and an optional ``title``).
An empty list is a valid answer (nothing to split). Anything else is a ``FormatError`` that says what was
found.

Verdicts (``parse_verdict``), strict on purpose: a line that is exactly ``VERDICT: approve`` or ``VERDICT:
reject`` (any case, surrounding spaces and markdown emphasis ignored; the last such line counts), or a JSON
object ``{"verdict": "approve" | "reject", "feedback": "…"}`` (fenced or bare). The feedback passed to the
next round is the JSON's ``feedback`` (or ``reason``), else the answer without its verdict lines. No verdict
at all is a ``FormatError``, never an approval.

Health (``parse_health``): a line ``HEALTH: ok`` or ``HEALTH: alert``; None when there is none.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n(.*?)```", re.DOTALL)
# Markdown emphasis may wrap the label, the value, or both: "**VERDICT**: approve", "VERDICT: **approve**".
_VERDICT = re.compile(r"^[\s>*_`#-]*verdict[*_`]*\s*:\s*[*_`]*\s*(approve|reject)\s*[*_`.!]*\s*$", re.IGNORECASE)
_HEALTH = re.compile(r"^[\s>*_`#-]*health[*_`]*\s*:\s*[*_`]*\s*(ok|alert)\s*[*_`.!]*\s*$", re.IGNORECASE)
MAX_SUBTASK_CHARS = 10_000


class FormatError(ValueError):
    """An answer that does not have the format its role asks for; the message says what was expected."""


@dataclass(frozen=True)
class Verdict:
    approve: bool
    feedback: str

    @property
    def word(self) -> str:
        return "approve" if self.approve else "reject"


def _candidates(text: str) -> list[str]:
    fenced = [body for _lang, body in _FENCE.findall(text)]
    out = list(reversed(fenced))
    out.append(text)
    return [c.strip() for c in out if c.strip()]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_subtasks(text: str | None) -> list[str]:
    if not text or not text.strip():
        raise FormatError("the coordinator gave no answer; expected a JSON list of subtasks")
    found: Any = None
    for candidate in _candidates(text):
        found = _loads(candidate)
        if isinstance(found, list):
            break
        start, end = candidate.find("["), candidate.rfind("]")
        if 0 <= start < end:
            found = _loads(candidate[start : end + 1])
            if isinstance(found, list):
                break
        found = None
    if found is None:
        raise FormatError(f"no JSON list of subtasks in the coordinator's answer: {_clip(text)!r}")
    items: list[str] = []
    for n, item in enumerate(found):
        if isinstance(item, dict) and isinstance(item.get("task"), str):
            title = item.get("title")
            item = f"{title}: {item['task']}" if isinstance(title, str) and title else item["task"]
        if not isinstance(item, str) or not item.strip():
            raise FormatError(f"subtask {n} is not a non-empty string (or an object with a `task` string): {item!r}")
        items.append(item.strip()[:MAX_SUBTASK_CHARS])
    return items


def parse_verdict(text: str | None) -> Verdict:
    if not text or not text.strip():
        raise FormatError("the reviewer gave no answer; expected a line `VERDICT: approve` or `VERDICT: reject`")
    lines = text.splitlines()
    hits = [(i, m.group(1).lower()) for i, line in enumerate(lines) if (m := _VERDICT.match(line))]
    if hits:
        _, word = hits[-1]
        rest = "\n".join(line for i, line in enumerate(lines) if i not in {j for j, _ in hits}).strip()
        return Verdict(word == "approve", rest)
    for candidate in _candidates(text):
        found = _loads(candidate)
        if isinstance(found, dict) and str(found.get("verdict", "")).lower() in ("approve", "reject"):
            feedback = found.get("feedback") or found.get("reason") or ""
            return Verdict(str(found["verdict"]).lower() == "approve", str(feedback).strip())
    raise FormatError(
        "no verdict in the reviewer's answer: expected a line `VERDICT: approve` or `VERDICT: reject` "
        f'(or JSON {{"verdict": …}}); it said {_clip(text)!r}'
    )


def parse_health(text: str | None) -> str | None:
    hits = [m.group(1).lower() for line in (text or "").splitlines() if (m := _HEALTH.match(line))]
    return hits[-1] if hits else None


def _clip(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
