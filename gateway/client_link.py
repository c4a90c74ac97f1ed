"""The client's side of a proxied request: what has been sent to it, and whether it is still there.

A queued streaming request gets its response headers at once and SSE comments
while it waits, so proxies in between keep the connection open; from then on
anything that goes wrong has to be told as an SSE error event, not a status.
Watching for the client hanging up costs a task, so it starts only when
something needs it (a queue wait, a stream).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from gateway.errors import ANTHROPIC, GatewayError, render_error
from gateway.responses_events import failure_events

# A client that stops reading blocks our writes; past this it is dropped.
STALLED_CLIENT_SEC = 30.0

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: do not hold the stream back
]


class ClientLink:
    def __init__(self, send: Any, receive: Any, dialect: str) -> None:
        self.send = send
        self._receive = receive
        self.dialect = dialect
        self.started = False  # response headers already sent (a queued stream)
        self._hang_up: asyncio.Future[Any] | None = None
        self._responses_model: str | None = None
        self._responses_api = False  # a /v1/responses call: its stream ends in that API's own events

    def speak_responses_api(self, model: str | None) -> None:
        """A Responses API call: an error after the stream began is told with `error` and `response.failed`."""
        self._responses_api = True
        self._responses_model = model

    @property
    def hang_up(self) -> asyncio.Future[Any]:
        """Done when the client disconnects (the body has been read by then)."""
        if self._hang_up is None:
            self._hang_up = asyncio.ensure_future(self._wait_for_disconnect())
        return self._hang_up

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def close(self) -> None:
        if self._hang_up is not None and not self._hang_up.done():
            self._hang_up.cancel()

    async def keep_alive_while_queued(self, position: int) -> None:
        """For a queued stream: headers now, then one SSE comment per heartbeat, with the position."""
        if not self.started:
            self.started = True
            await self._send_or_drop({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        comment = f": poolgate: waiting for a key, position {position + 1} in line\n\n".encode()
        await self._send_or_drop({"type": "http.response.body", "body": comment, "more_body": True})

    async def _send_or_drop(self, message: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self.send(message), STALLED_CLIENT_SEC)
        except TimeoutError:
            raise GatewayError("invalid_request", "The client stopped reading.") from None

    async def send_error(self, error: GatewayError) -> None:
        """The error as a status and body, or as the dialect's SSE error event once the stream has begun."""
        status, headers, body = render_error(self.dialect, error)
        if not self.started:
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
            await self.send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await self.end_stream_with_error(body)

    async def end_stream_with_error(self, error_body: bytes) -> None:
        if self._responses_api:
            # Numbered from 0: the streams ended here (queued ones) have carried no upstream event. An unforeseen
            # failure after upstream events would repeat their numbers; the SDKs do not check them.
            event = failure_events(error_body, model=self._responses_model, first_sequence_number=0)
        elif self.dialect == ANTHROPIC:
            event = b"event: error\ndata: " + _one_line(error_body) + b"\n\n"
        else:
            event = b"data: " + _one_line(error_body) + b"\n\n"
        await self.send({"type": "http.response.body", "body": event, "more_body": False})


def _one_line(body: bytes) -> bytes:
    """JSON re-encoded compactly: an SSE `data:` line must not contain a newline."""
    try:
        return msgspec.json.encode(msgspec.json.decode(body))
    except msgspec.DecodeError:
        return msgspec.json.encode({"error": {"message": body.decode("utf-8", "replace"), "type": "upstream_error"}})
