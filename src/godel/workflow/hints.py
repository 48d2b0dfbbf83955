"""Small wording helpers shared by the validators: "did you mean", and what kind of value was found."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` was probably meant to be: same letters ignoring case and ``_``/``-`` (so
    ``depends_on`` finds ``dependsOn``), else the closest spelling."""
    options = list(candidates)

    def squash(s: str) -> str:
        return s.replace("_", "").replace("-", "").lower()

    for option in options:
        if squash(option) == squash(word):
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def hint(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or nothing."""
    guess = did_you_mean(word, candidates)
    return f" (did you mean {guess!r}?)" if guess else ""


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
