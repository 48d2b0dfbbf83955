"""Turning a byte stream (a pipe, an agent's log file) into text lines, bounded.

Agents write whatever they like; one line of minified JSON can be megabytes. Lines are therefore capped at
``MAX_LINE`` bytes (a longer line comes out in pieces, cut on a UTF-8 character boundary), so neither a log
reader nor an event row grows without bound. Bytes are decoded as UTF-8 with replacement: an agent's bad byte
must never stop its output from being read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from godel.core.ports import OutputLine

MAX_LINE = 64 * 1024
READ_LIMIT = 1 << 20  # bytes read per log file per call; the rest comes on the next call
StreamName = Literal["stdout", "stderr"]
STREAMS: tuple[StreamName, ...] = ("stdout", "stderr")


def _decode(raw: bytes) -> str:
    if raw.endswith(b"\r"):  # CRLF output reads like LF output
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


def _cut(data: bytes, start: int, limit: int) -> int:
    """Where to end a piece of at most ``limit`` bytes from ``start`` without splitting a UTF-8 character."""
    end = start + limit
    cut = end
    # Step back over continuation bytes (0b10xxxxxx), at most 3, to the first byte of a character.
    while cut > end - 3 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut


class LineSplitter:
    """Feed bytes, get complete lines; ``pending`` counts the bytes of an unfinished last line."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line < 8:
            raise ValueError("max_line must leave room for a whole UTF-8 character")
        self._max = max_line
        self._buf = b""

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[str]:
        buf = self._buf + data if self._buf else data
        lines: list[str] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start, start + self._max + 1)
            if nl >= 0:
                lines.append(_decode(buf[start:nl]))
                start = nl + 1
            elif len(buf) - start > self._max:
                cut = _cut(buf, start, self._max)
                lines.append(buf[start:cut].decode("utf-8", errors="replace"))
                start = cut
            else:
                break
        self._buf = buf[start:]
        return lines

    def flush(self) -> list[str]:
        """The unfinished last line, if any (the stream has ended)."""
        rest, self._buf = self._buf, b""
        return [_decode(rest)] if rest else []


def read_output(log_dir: Path, offsets: Mapping[str, int], final: bool) -> tuple[list[OutputLine], dict[str, int]]:
    """New complete lines of stdout.log and stderr.log after ``offsets``; see ``Runtime.read_output``.

    Polled for every agent many times a second, so it stats first and opens a file only when it grew.
    """
    lines: list[OutputLine] = []
    new_offsets = dict(offsets)
    for stream in STREAMS:
        offset = offsets.get(stream, 0)
        path = log_dir / f"{stream}.log"
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
        if size < offset:  # replaced or truncated behind our back: read it from the start
            offset = 0
        if size == offset:
            new_offsets[stream] = offset
            continue
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(min(size - offset, READ_LIMIT))
        splitter = LineSplitter()
        texts = splitter.feed(data)
        consumed = len(data) - splitter.pending
        if final and offset + len(data) >= size:
            texts += splitter.flush()
            consumed = len(data)
        lines.extend(OutputLine(stream, text) for text in texts)
        new_offsets[stream] = offset + consumed
    return lines, new_offsets
