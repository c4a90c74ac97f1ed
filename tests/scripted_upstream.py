"""A raw TCP upstream whose every answer a test writes, and which sees when the gateway hangs up.

The fake upstream behaves like a real API; this one does what a real API does
only on a bad day: break off a body, stall before answering, stream more than a
client reads. Each request becomes an `Exchange`, answered by the test's
coroutine, and the moment the gateway closes that connection is recorded, so a
test can assert what upstream observed ("my connection was closed within 2 s")
instead of guessing from the gateway's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Exchange:
    """One request the gateway sent, and what became of its connection."""

    index: int  # 0 for the first request this upstream received
    head: bytes
    body: bytes
    writer: asyncio.StreamWriter
    received_at: float
    gone: threading.Event = field(default_factory=threading.Event)  # the gateway closed the connection
    gone_here: asyncio.Event = field(default_factory=asyncio.Event)  # the same, for the answering coroutine
    gone_at: float | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_gone(self, seconds: float) -> bool:
        """Until the gateway hangs up (True), or `seconds` have passed (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.gone_here.wait()
        return self.gone.is_set()


Answer = Callable[[Exchange], Awaitable[None]]


def chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def json_head(status: int, length: int, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
            f"{extra}\r\n").encode()


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
               b"connection: close\r\n\r\n")


class ScriptedUpstream:
    """Serves on loopback from its own thread; `answer` is awaited once per request, on that thread."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.exchanges: list[Exchange] = []
        self.received = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        assert self._ready.wait(10), "the scripted upstream did not start"
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for exchange in self.exchanges:
                exchange.writer.transport.abort()
            await asyncio.sleep(0.05)  # let the answers see their connections end

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def wait_for_request(self, index: int, timeout: float = 10.0) -> Exchange:
        """The `index`-th request, once upstream has received it whole."""
        with self.received:
            assert self.received.wait_for(lambda: len(self.exchanges) > index, timeout), \
                f"upstream never received request {index}"
            return self.exchanges[index]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        with self.received:
            exchange = Exchange(len(self.exchanges), head, body, writer, time.monotonic())
            self.exchanges.append(exchange)
            self.received.notify_all()
        watcher = asyncio.ensure_future(self._watch_for_hang_up(reader, exchange))
        try:
            await self._answer(exchange)
        except ConnectionError:
            pass  # the gateway hung up while we were writing; the watcher records when
        finally:
            writer.close()
            await asyncio.wait([watcher], timeout=5)  # a close of our own ends the watcher too

    @staticmethod
    async def _watch_for_hang_up(reader: asyncio.StreamReader, exchange: Exchange) -> None:
        """Every request is one per connection here (we answer `connection: close`): EOF means it hung up."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        exchange.gone_at = time.monotonic()
        exchange.gone.set()
        exchange.gone_here.set()
