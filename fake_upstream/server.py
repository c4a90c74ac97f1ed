"""The mock upstream's HTTP/1.1 server: a raw asyncio protocol around httptools.

It is the baseline in poolgate's benchmarks, so it avoids a framework and
answers a plain request inside the read callback, with no task per request.
Only replies that must wait (added latency, paced streams) get a task, and
that task is cancelled the moment the client hangs up, which is how the
recording learns a response was never completed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools
import msgspec

from .anthropic_api import answer_anthropic
from .behaviour import KeyGate
from .exchange import AnyReply, MockRequest, Reply, StreamReply, json_reply
from .leaks import leak_key, redirect_reply
from .openai_api import OPENAI_ONLY_PATHS, answer_openai
from .prompt_cache import PromptCache
from .stream_failure import fail_mid_stream

MAX_RECORDED = 10_000

_STATUS_LINES = {status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in HTTPStatus}
_STATUS_LINES[529] = "HTTP/1.1 529 Site Overloaded\r\n"  # Anthropic's overload status; not in HTTPStatus
_STREAM_END = b"0\r\n\r\n"


class RecordedRequest(msgspec.Struct):
    """One request as the mock received it, and how it answered."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: str
    key: str | None
    status: int
    completed: bool  # False while answering, and for good if the client hung up first
    started_at: float

    def __getitem__(self, name: str) -> Any:
        """Read a field by name too, so code written against the thread handle's dicts works here."""
        return getattr(self, name)


class MockUpstream:
    """A fake OpenAI and Anthropic API on one port; see the package docstring for the behaviours."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0.0,
        tokens_per_sec: float = 0.0,
        output_tokens: int = 16,
        rpm: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.latency_ms = latency_ms
        self.tokens_per_sec = tokens_per_sec  # 0 = stream chunks without pacing
        self.output_tokens = output_tokens
        self.requests: list[RecordedRequest] = []
        self._gate = KeyGate(default_rpm=rpm)
        self._prompt_cache = PromptCache()  # Anthropic's prompt caching, for `cache_control` markers
        self._server: asyncio.Server | None = None
        self._connections: set[_HttpConnection] = set()

    async def start(self) -> int:
        """Start listening; return the port actually bound (useful with port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _HttpConnection(self), self.host, self.port, backlog=2048
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        await self._server.wait_closed()
        self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget recorded requests, every key's rate-limit window and every revival."""
        self.requests.clear()
        self._gate.reset()
        self._prompt_cache.clear()

    def revive(self, key: str) -> None:
        """Make a refused key good again: its owner fixed billing, or the revocation was a mistake."""
        self._gate.revive(key)

    def revoke(self, key: str) -> None:
        """Revoke a key that worked: its owner withdrew it."""
        self._gate.revoke(key)

    def answer(self, request: MockRequest) -> tuple[AnyReply, float]:
        """The reply to a request, and how many seconds to hold it back first."""
        if request.path.startswith("/_mock/"):
            return self._answer_control(request), 0.0
        delay_ms = self.latency_ms
        behaviour = None if request.key is None else self._gate.behaviour(request.key)
        if behaviour is not None:
            delay_ms += behaviour.delay_ms
        anthropic = _speaks_anthropic(request)
        reply: AnyReply
        if behaviour is not None and behaviour.redirects:
            reply = redirect_reply(request.key or "")
        elif anthropic:
            reply = answer_anthropic(request, self._gate, self.output_tokens, self._prompt_cache)
        else:
            reply = answer_openai(request, self._gate, self.output_tokens)
        if behaviour is not None and behaviour.echoes_key:
            reply = leak_key(reply, request.key or "", anthropic=anthropic)
        if behaviour is not None and behaviour.fails_mid_stream and isinstance(reply, StreamReply):
            reply = fail_mid_stream(reply, anthropic=anthropic)
        return reply, delay_ms / 1000.0

    def record(self, request: MockRequest, started_at: float) -> RecordedRequest | None:
        """Record a request (keeping the last MAX_RECORDED); control calls are not recorded."""
        if request.path.startswith("/_mock/"):
            return None
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            body=request.body.decode("utf-8", errors="replace"),
            key=request.key,
            status=0,
            completed=False,
            started_at=started_at,
        )
        self.requests.append(record)
        if len(self.requests) > MAX_RECORDED:
            del self.requests[0]
        return record

    def _answer_control(self, request: MockRequest) -> Reply:
        if request.method == "GET" and request.path == "/_mock/requests":
            return Reply(200, msgspec.json.encode(self.requests))
        if request.method == "POST" and request.path == "/_mock/reset":
            self.reset()
            return json_reply(200, {"object": "mock", "reset": True})
        if request.method == "POST" and request.path.startswith("/_mock/keys/") and request.path.endswith("/revive"):
            key = unquote(request.path.removeprefix("/_mock/keys/").removesuffix("/revive"))
            self.revive(key)
            return json_reply(200, {"object": "mock", "revived": True})
        return json_reply(
            404,
            {
                "error": {
                    "message": f"Unknown control endpoint {request.path}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )


def _speaks_anthropic(request: MockRequest) -> bool:
    """Which API a request is for: /v1/messages is Anthropic's, shared paths go by the headers."""
    if request.path.startswith("/v1/messages"):
        return True
    if request.path in OPENAI_ONLY_PATHS:
        return False
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def credential_of(headers: dict[str, str]) -> str | None:
    """The key a request carries: `Authorization: Bearer X`, else `x-api-key: X`."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return headers.get("x-api-key") or None


@dataclass(slots=True)
class _PendingReply:
    reply: AnyReply
    record: RecordedRequest | None
    delay: float
    keep_alive: bool


class _HttpConnection(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer them in order."""

    def __init__(self, upstream: MockUpstream) -> None:
        self._upstream = upstream
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._waiting: deque[_PendingReply] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    # --- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._upstream._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._upstream._connections.discard(self)
        if self._sender is not None:
            self._sender.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            malformed = json_reply(400, {"error": "malformed HTTP request"})
            self._send_at_once(_PendingReply(malformed, None, 0, keep_alive=False))

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- httptools callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        header = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(header)
        self._headers[header] = text if previous is None else f"{previous}, {text}"

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        started_at = time.time()
        if self._transport is None or self._transport.is_closing():
            return  # a request after one that closed the connection
        url = httptools.parse_url(self._url)
        request = MockRequest(
            method=self._parser.get_method().decode("ascii"),
            path=url.path.decode("latin-1"),
            query=(url.query or b"").decode("latin-1"),
            headers=self._headers,
            body=b"".join(self._body),
            key=credential_of(self._headers),
        )
        upstream = self._upstream
        record = upstream.record(request, started_at)
        reply, delay = upstream.answer(request)
        if record is not None:
            record.status = reply.status
        pending = _PendingReply(reply, record, delay, self._parser.should_keep_alive())
        unpaced = isinstance(reply, Reply) or upstream.tokens_per_sec <= 0
        if self._sender is None and delay <= 0 and unpaced:
            self._send_at_once(pending)
            return
        self._waiting.append(pending)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_waiting())

    # --- writing ---------------------------------------------------------------

    def _send_at_once(self, pending: _PendingReply) -> None:
        """Write a whole reply in one go (a plain body, or an unpaced stream)."""
        assert self._transport is not None
        reply = pending.reply
        if isinstance(reply, Reply):
            self._transport.write(_plain_head(reply, pending.keep_alive) + reply.body)
        else:
            events = [*reply.opening, *reply.tokens, *reply.closing]
            self._transport.write(_stream_head(reply, pending.keep_alive) + _chunks(events) + _STREAM_END)
        self._finish(pending)

    async def _send_waiting(self) -> None:
        """Send replies that must wait (latency, pacing) in order; cancelled when the client leaves."""
        try:
            while self._waiting and not self._closed:
                pending = self._waiting.popleft()
                if pending.delay > 0:
                    await asyncio.sleep(pending.delay)
                if isinstance(pending.reply, StreamReply) and self._upstream.tokens_per_sec > 0:
                    await self._send_paced(pending, pending.reply)
                else:
                    self._send_at_once(pending)
        finally:
            self._sender = None

    async def _send_paced(self, pending: _PendingReply, reply: StreamReply) -> None:
        assert self._transport is not None
        interval = 1.0 / self._upstream.tokens_per_sec
        self._transport.write(_stream_head(reply, pending.keep_alive) + _chunks(reply.opening))
        for event in reply.tokens:
            await asyncio.sleep(interval)
            if self._closed:
                return
            self._transport.write(_chunks([event]))
        self._transport.write(_chunks(reply.closing) + _STREAM_END)
        self._finish(pending)

    def _finish(self, pending: _PendingReply) -> None:
        assert self._transport is not None
        if pending.record is not None:
            pending.record.completed = True
        if not pending.keep_alive:
            self._transport.close()


def _plain_head(reply: Reply, keep_alive: bool) -> bytes:
    lines = [
        _STATUS_LINES[reply.status],
        "content-type: ",
        reply.content_type,
        "\r\ncontent-length: ",
        str(len(reply.body)),
        "\r\n",
    ]
    return _finish_head(lines, reply.headers, keep_alive)


def _stream_head(reply: StreamReply, keep_alive: bool) -> bytes:
    lines = [
        _STATUS_LINES[reply.status],
        "content-type: text/event-stream; charset=utf-8\r\n"
        "transfer-encoding: chunked\r\ncache-control: no-cache\r\n",
    ]
    return _finish_head(lines, reply.headers, keep_alive)


def _finish_head(lines: list[str], headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n" if keep_alive else "connection: close\r\n\r\n")
    return "".join(lines).encode("latin-1")


def _chunks(events: list[bytes]) -> bytes:
    """Frame events for chunked transfer encoding, one chunk per event."""
    return b"".join(b"%x\r\n%b\r\n" % (len(event), event) for event in events)
