"""Server-sent events: cutting a byte stream into whole events, without changing a byte."""

from __future__ import annotations


class EventFramer:
    """Feed it chunks as they arrive; it hands back complete events (each ending in its blank line)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk if self._buffer else chunk
        events = []
        start = 0
        while True:
            end = data.find(b"\n\n", start)
            crlf = data.find(b"\r\n\r\n", start)
            if end == -1 and crlf == -1:
                break
            if crlf != -1 and (end == -1 or crlf < end):
                stop = crlf + 4
            else:
                stop = end + 2
            events.append(data[start:stop])
            start = stop
        self._buffer = data[start:]
        return events

    def flush(self) -> bytes:
        """Whatever trailed the last complete event (a stream cut short)."""
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes:
    """The `data:` lines of one event, joined: the JSON payload of OpenAI and Anthropic events."""
    return b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
