"""Reading one field at a time: each reader reports what is wrong (with its position) and returns None.

The validator in ``godel.workflow.parsing`` is built on ``Reader`` so that no problem stops the check: a
bad value is recorded as a ``Problem`` and left out, and checking goes on with the next field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from godel.workflow.hints import describe, hint
from godel.workflow.loader import Path, Problem, SourceMap

MISSING = object()
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"500ms"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, not {describe(value)}")
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _NUMBER.fullmatch(text):
            value = float(text)
        else:
            parts = list(_DURATION_PART.finditer(text))
            if not text or "".join(p.group(0) for p in parts) != text:
                raise ValueError(f"{value!r} is not a duration: use seconds or a string such as 30s, 5m, 1h30m")
            value = sum(float(p.group(1)) * _UNIT[p.group(2)] for p in parts)
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a duration")
    return float(value)


def field_name(path: Path) -> str:
    """``("steps", 2, "dependsOn", 0)`` -> ``steps[2].dependsOn[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Reader:
    def __init__(self, source: SourceMap | None, problems: list[Problem]) -> None:
        self.source = source  # None for plain data (an API body): problems then carry no position
        self.problems = problems

    # Reporting

    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        line = column = None
        if self.source is not None:
            line, column = self.source.key(path) if key else self.source.value(path)
        self.problems.append(Problem(path, message, line, column))

    def error_inside(self, path: Path, value: str, index: int, needle: str, message: str) -> None:
        line = column = None
        if self.source is not None:
            line, column = self.source.inside(path, value, index, needle)
        self.problems.append(Problem(path, message, line, column))

    # Readers: each reports what is wrong and returns None (or the default) for a bad value

    def mapping(self, value: Any, path: Path, allowed: Sequence[str], what: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.error(path, f"{what} must be a mapping, not {describe(value)}")
            return None
        for key in value:
            if key not in allowed:
                guess = hint(key, allowed)
                more = "" if guess else f"; {what} takes: {', '.join(allowed)}"
                self.error((*path, key), f"unknown key {key!r}{guess}{more}", key=True)
        return value

    def text(
        self, m: Mapping[str, Any], key: str, path: Path, *, required: bool = False, max_len: int | None = None
    ) -> str | None:
        value = m.get(key, MISSING)
        where = (*path, key)
        if value is MISSING:
            if required:
                self.error(where, f"missing required key {key!r}")
            return None
        if not isinstance(value, str):
            self.error(where, f"must be a string, not {describe(value)}")
            return None
        if not value.strip():
            self.error(where, "must not be blank")
            return None
        if max_len is not None and len(value) > max_len:
            self.error(where, f"too long: {len(value)} characters, at most {max_len}")
            return None
        return value

    def integer(self, m: Mapping[str, Any], key: str, path: Path, *, minimum: int) -> int | None:
        value = m.get(key, MISSING)
        if value is MISSING:
            return None
        if isinstance(value, float) and value.is_integer():  # JSON writers may send 3 as 3.0
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            shown = f"{value:g}" if isinstance(value, float) else describe(value)
            self.error((*path, key), f"must be a whole number, not {shown}")
            return None
        if value < minimum:
            self.error((*path, key), f"must be at least {minimum}, not {value}")
            return None
        return value

    def number(self, m: Mapping[str, Any], key: str, path: Path, *, minimum: float) -> float | None:
        value = m.get(key, MISSING)
        if value is MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error((*path, key), f"must be a number, not {describe(value)}")
            return None
        if value < minimum:
            self.error((*path, key), f"must be at least {minimum:g}, not {value:g}")
            return None
        return float(value)

    def duration(self, m: Mapping[str, Any], key: str, path: Path, *, positive: bool = True) -> float | None:
        value = m.get(key, MISSING)
        if value is MISSING:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error((*path, key), str(exc))
            return None
        if seconds < 0 or (positive and seconds == 0):
            self.error((*path, key), f"must be {'more than' if positive else 'at least'} 0 seconds")
            return None
        return seconds

    def choice(self, m: Mapping[str, Any], key: str, path: Path, options: Sequence[str]) -> str | None:
        value = m.get(key, MISSING)
        if value is MISSING:
            return None
        if not isinstance(value, str) or value not in options:
            shown = repr(value) if isinstance(value, str) else describe(value)
            guess = hint(value, options) if isinstance(value, str) else ""
            self.error((*path, key), f"must be one of {', '.join(options)}, not {shown}{guess}")
            return None
        return value

    def mapping_any(self, value: Any, path: Path, what: str) -> Mapping[str, Any] | None:
        """A mapping with free keys (``variables``): only the type is checked here."""
        if not isinstance(value, Mapping):
            self.error(path, f"{what} must be a mapping, not {describe(value)}")
            return None
        return value

    def json_like(self, value: Any, path: Path, what: str) -> bool:
        if value is None or isinstance(value, bool | int | float | str):
            return True
        if isinstance(value, list):
            return all([self.json_like(v, (*path, i), what) for i, v in enumerate(value)])
        if isinstance(value, Mapping):
            return all([self.json_like(v, (*path, k), what) for k, v in value.items()])
        kinds = "strings, numbers, booleans, lists, mappings"
        self.error(path, f"{what} must be JSON-like ({kinds}), not {describe(value)}; quote it")
        return False
