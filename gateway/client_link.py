"""The client's side of a proxied request: what has been sent to it, and whether it is still there.

Every byte for the client goes out through this link, and no write may wait
longer than `STALLED_CLIENT_SEC` (noticed within `SWEEP_SEC` more): a client
that stops reading would otherwise hold its key for as long as it likes. A client that hangs up, or stalls, is gone:
`while_present()` cancels whatever is serving it (waiting in line, waiting for
upstream's headers, reading upstream's body, relaying a stream) at that moment,
and raises `ClientGone` in its place, so every hold inside is returned at once.

Watching costs nothing per request on the fast path, which answers in a few
milliseconds: one sweep per process, every `SWEEP_SEC` while any request is
served, looks for stalled writes and starts listening for a hang-up only on
requests that have lasted that long (a queued request listens at once). A
hang-up is therefore noticed within `SWEEP_SEC`; a timer and a listening task
per request cost about a tenth of the gateway's throughput.

A queued streaming request gets its response headers at once and SSE comments
while it waits, so proxies in between keep the connection open; from then on
anything that goes wrong has to be told as an SSE error event, not a status.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from types import TracebackType
from typing import Any

import msgspec

from gateway.errors import ANTHROPIC, GatewayError, render_error
from gateway.metrics import note_response
from gateway.responses_events import failure_events
from queues.waiting import ClientGone

# A Responses API event's number, as a key: inside a JSON string its quotes would be escaped.
_SEQUENCE_NUMBER = re.compile(rb'"sequence_number"\s*:\s*(\d+)')

# How often the sweep looks at the requests being served: the bound on noticing a hang-up, and the slack on a stall.
SWEEP_SEC = 0.5

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: do not hold the stream back
]


class ClientLink:
    def __init__(self, send: Any, receive: Any, dialect: str, stalled_client_sec: float = 30.0) -> None:
        self._send = send
        self._receive = receive
        self.dialect = dialect
        self._stalled_client_sec = stalled_client_sec
        self.started = False  # response headers already sent (a queued stream)
        self.finished = False  # the last byte of the response is on its way: no hang-up can matter now
        self.gone = False  # hung up or stopped reading: nothing more is written
        self._hang_up: asyncio.Future[Any] | None = None
        self._scope: _WhilePresent | None = None  # the `while_present` block now running
        self._responses_model: str | None = None
        self._responses_api = False  # a /v1/responses call: its stream ends in that API's own events
        self._next_sequence_number = 0  # of that API's events: one past the last relayed

    def speak_responses_api(self, model: str | None) -> None:
        """A Responses API call: an error after the stream began is told with `error` and `response.failed`."""
        self._responses_api = True
        self._responses_model = model

    @property
    def speaks_responses_api(self) -> bool:
        return self._responses_api

    @property
    def hang_up(self) -> asyncio.Future[Any]:
        """Done when the client disconnects (the body has been read by then)."""
        if self._hang_up is None:
            self._hang_up = asyncio.ensure_future(self._wait_for_disconnect())
            if self._scope is not None:  # someone waits on it (the queue): the scope listens from now on too
                self._scope.listen()
        return self._hang_up

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def while_present(self) -> _WhilePresent:
        """`async with`: the block is cancelled the moment the client hangs up or stalls; raises ClientGone."""
        return _WhilePresent(self, self._stalled_client_sec)

    def close(self) -> None:
        if self._hang_up is not None and not self._hang_up.done():
            self._hang_up.cancel()

    # --- writing ----------------------------------------------------------------------------

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """The response's status and headers; an error after this is told in the body."""
        self.started = True
        note_response(status, headers)  # for /metrics and the failed-request log line
        await self._write({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, body: bytes, *, more: bool = True) -> None:
        """Part of the body; `more=False` ends the response."""
        if not more:
            self.finished = True
        if self._responses_api:  # its failure events go on numbering from what was relayed
            self._note_sequence_numbers(body)
        await self._write({"type": "http.response.body", "body": body, "more_body": more})

    def _note_sequence_numbers(self, body: bytes) -> None:
        numbers = _SEQUENCE_NUMBER.findall(body)
        if numbers:
            self._next_sequence_number = max(self._next_sequence_number, max(map(int, numbers)) + 1)

    async def _write(self, message: dict[str, Any]) -> None:
        if self.gone:
            raise ClientGone
        scope = self._scope
        if scope is not None:
            # Inside `while_present`, its watchdog bounds the write: two stores per write, no
            # timer, since this runs for every event of every stream.
            scope.writing_since = scope.loop.time()
            try:
                await self._send(message)
            finally:
                scope.writing_since = None
            return
        try:
            async with asyncio.timeout(self._stalled_client_sec):
                await self._send(message)
        except TimeoutError:
            self.gone = True  # a client that reads nothing for this long is not waiting for an answer
            raise ClientGone from None

    async def keep_alive_while_queued(self, position: int) -> None:
        """For a queued stream: headers now, then one SSE comment per heartbeat, with the position."""
        if not self.started:
            await self.start(200, SSE_HEADERS)
        await self.write(f": poolgate: waiting for a key, position {position + 1} in line\n\n".encode())

    async def send_complete(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole response at once (a body already read)."""
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self.write(body, more=False)

    async def send_error(self, error: GatewayError) -> None:
        """The error as a status and body, or as the dialect's SSE error event once the stream has begun."""
        if self.gone or self.finished:
            return
        status, headers, body = render_error(self.dialect, error)
        try:
            if not self.started:
                await self.start(status, headers)
                await self.write(body, more=False)
                return
            await self.end_stream_with_error(body)
        except ClientGone:
            pass  # it stopped reading: there is nobody to tell

    async def end_stream_with_error(self, error_body: bytes) -> None:
        """The last event of a stream that has begun: the error in the dialect's (or the Responses API's) events."""
        if self._responses_api:
            # After the events already relayed (none for a stream that was queued): numbers never repeat.
            event = failure_events(error_body, model=self._responses_model,
                                   first_sequence_number=self._next_sequence_number)
        elif self.dialect == ANTHROPIC:
            event = b"event: error\ndata: " + _one_line(error_body) + b"\n\n"
        else:
            event = b"data: " + _one_line(error_body) + b"\n\n"
        await self.write(event, more=False)


class _WhilePresent:
    """A cancel scope tied to the client's presence.

    A hang-up, or a write to the client waiting `STALLED_CLIENT_SEC`, cancels
    the task serving the request once; the scope takes its cancellation back
    on the way out (`Task.uncancel`), so a cancellation from elsewhere
    (shutdown) is never mistaken for the client leaving. Both are found by the
    loop's `_Sweep`, not by a timer of the scope's own. A store call can
    swallow a cancellation (redis-py's asyncio client over the embedded store
    does, about one time in three when it lands mid-call), so the queue, which
    makes store calls while it waits, also watches `hang_up` itself.
    Cancelling more than once is not the answer: it would break into the
    cleanup that the first cancellation set going.
    """

    __slots__ = ("_active", "_cancelled", "_link", "_listening", "_stalled_sec", "_sweep", "_task", "loop",
                 "writing_since")

    def __init__(self, link: ClientLink, stalled_client_sec: float) -> None:
        self._link = link
        self._stalled_sec = stalled_client_sec
        self.loop = asyncio.get_running_loop()
        self.writing_since: float | None = None  # loop time a write to the client began, while it waits
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._active = False
        self._listening = False  # a callback on the link's `hang_up`
        self._sweep = _Sweep.of(self.loop)

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        self._active = True
        self._link._scope = self
        self._sweep.enter(self)
        if self._link._hang_up is not None:
            self.listen()

    def listen(self) -> None:
        """From now on a hang-up cancels the block (the sweep calls this once a request has lasted a while)."""
        if self._listening or not self._active:
            return
        self._listening = True
        self._link.hang_up.add_done_callback(self._on_hang_up)

    def _on_hang_up(self, _: asyncio.Future[Any]) -> None:
        # uvicorn also reports "disconnect" once the response is complete: that one is not a hang-up.
        if not self._link.finished:
            self._client_gone()

    def look_for_stall(self, now: float) -> None:
        since = self.writing_since
        if since is not None and now - since >= self._stalled_sec:
            self._client_gone()  # a client that reads nothing for this long is not waiting for an answer

    def _client_gone(self) -> None:
        if not self._active or self._cancelled or self._task is None:
            return
        self._link.gone = True
        self._cancelled = True
        self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active = False
        self._link._scope = None
        self._sweep.leave(self)
        if self._listening:
            self._link.hang_up.remove_done_callback(self._on_hang_up)
        if not self._cancelled or self._task is None:
            return
        if self._task.uncancel():
            return  # cancelled from elsewhere too: that cancellation goes on
        if exc_type is not None:
            # Whatever the block raised, there is nobody to tell any more.
            raise ClientGone from None


class _Sweep:
    """One timer per event loop over every `while_present` block: stalls, and who has been served long enough to
    be listened to for a hang-up. It runs only while some block is open."""

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep] = weakref.WeakKeyDictionary()
    _last: _Sweep | None = None  # a process serves from one loop: no dictionary look-up per request

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._scopes: set[_WhilePresent] = set()
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Sweep:
        sweep = cls._last
        if sweep is None or sweep._loop is not loop:
            sweep = cls._by_loop.get(loop)
            if sweep is None:
                sweep = cls._by_loop[loop] = cls(loop)
            cls._last = sweep
        return sweep

    def enter(self, scope: _WhilePresent) -> None:
        self._scopes.add(scope)
        if self._timer is None:
            self._timer = self._loop.call_later(SWEEP_SEC, self._run)

    def leave(self, scope: _WhilePresent) -> None:
        self._scopes.discard(scope)

    def _run(self) -> None:
        self._timer = None
        now = self._loop.time()
        for scope in list(self._scopes):
            scope.look_for_stall(now)
            scope.listen()  # served for a sweep already: no longer the fast path, so worth a listener
        if self._scopes:
            self._timer = self._loop.call_later(SWEEP_SEC, self._run)


def _one_line(body: bytes) -> bytes:
    """JSON re-encoded compactly: an SSE `data:` line must not contain a newline."""
    try:
        return msgspec.json.encode(msgspec.json.decode(body))
    except msgspec.DecodeError:
        return msgspec.json.encode({"error": {"message": body.decode("utf-8", "replace"), "type": "upstream_error"}})
