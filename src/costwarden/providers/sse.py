"""Server-sent events cut from a byte stream split anywhere.

Events are kept as the exact bytes the upstream sent, so that an event passed through unchanged
reaches the client byte for byte; only an event whose data is rewritten is re-framed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EOL = re.compile(rb"\r\n|\r|\n")
_EOL_TEXT = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its raw bytes (blank line included), its ``event:`` name and joined ``data:``."""

    raw: bytes
    name: str | None
    data: str | None

    def with_data(self, data: bytes) -> bytes:
        """This event re-framed with ``data`` as its only data line; other fields are kept."""
        lines: list[bytes] = []
        placed = False
        for line in _EOL_TEXT.split(self.raw.decode("utf-8", "replace")):
            if not line:
                continue
            if line.startswith("data:") or line == "data":
                if not placed:
                    lines.append(b"data: " + data)
                    placed = True
                continue
            lines.append(line.encode())
        if not placed:
            lines.append(b"data: " + data)
        return b"\n".join(lines) + b"\n\n"


def parse_event(raw: bytes) -> Event:
    """Read the ``event`` and ``data`` fields of one raw event (comments and ids are ignored)."""
    if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.find(b"\n") == len(raw) - 2:
        # The usual event, one data line: what the general reading below gives for it.
        return Event(raw, None, raw[6:-2].decode("utf-8", "replace"))
    name: str | None = None
    data: list[str] = []
    text = raw.decode("utf-8", "replace")
    for line in _EOL_TEXT.split(text) if "\r" in text else text.split("\n"):
        if not line or line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data":
            data.append(value)
        elif key == "event":
            name = value
    return Event(raw, name, "\n".join(data) if data else None)


class EventSplitter:
    """Accumulates bytes and hands out each event once its terminating blank line has arrived."""

    def __init__(self) -> None:
        self._buffer = bytearray()  # always starts at the beginning of an unfinished event
        self._scan = 0  # where to resume looking for line ends
        self._line_start = 0
        self._carriage_returns = False  # LF-only streams (the usual) take a faster path

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk``."""
        if not self._carriage_returns and b"\r" in chunk:
            self._carriage_returns = True
            self._scan = self._line_start = 0  # rescan the unfinished event with the general rule
        if self._carriage_returns:
            return self._feed_any(chunk)
        return self._feed_lf(chunk)

    def _feed_lf(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += chunk
        events: list[Event] = []
        start, pos = 0, max(self._scan - 1, 0)  # a blank line may straddle the previous chunk
        while True:
            if buffer[start:start + 1] == b"\n":  # an empty line where an event starts
                end = start + 1
            else:
                found = buffer.find(b"\n\n", max(pos, start))
                if found < 0:
                    break
                end = found + 2
            events.append(parse_event(bytes(buffer[start:end])))
            start = pos = end
        del buffer[:start]
        self._scan = len(buffer)
        return events

    def _feed_any(self, chunk: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += chunk
        events: list[Event] = []
        event_start, pos, line_start = 0, self._scan, self._line_start
        while (match := _EOL.search(buffer, pos)) is not None:
            if match.end() == len(buffer) and match.group() == b"\r":
                pos = match.start()  # a lone CR may be the first half of CRLF: wait for the next byte
                break
            if match.start() == line_start:  # an empty line ends the event
                events.append(parse_event(bytes(buffer[event_start:match.end()])))
                event_start = match.end()
            pos = line_start = match.end()
        else:
            pos = len(buffer)
        del buffer[:event_start]
        self._scan, self._line_start = pos - event_start, line_start - event_start
        return events

    def flush(self) -> list[Event]:
        """Whatever is left when the stream ends, as a final (unterminated) event."""
        if not self._buffer:
            return []
        raw = bytes(self._buffer)
        self._buffer.clear()
        self._scan = self._line_start = 0
        return [parse_event(raw)]
