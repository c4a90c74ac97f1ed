"""The hot path's line to Redis: Lua scripts over one pipelined connection.

Every proxied request runs two scripts (lease a key, settle it), so their cost
is paid thousands of times a second. redis-py spends about 60 µs of CPU on
each call (connection pool checkout, a lock, a stream reader, command
encoding); this link spends about 10: one connection per process, every call
written straight to it, replies parsed by hiredis and handed back in order,
since Redis answers one connection's commands in the order they came. Writes
made in the same turn of the event loop go out in one system call.

A connection is usable only once Redis has answered its handshake (`AUTH`,
then `SELECT` of the configured database) with OK: until then the link writes
nothing else to it, and calls made meanwhile wait for the handshake and go
after it. Otherwise a call made in the few loop turns between the socket
opening and the handshake being sent would reach Redis first, and be refused
(`NOAUTH`) or run in database 0.

`rediss://` speaks TLS, verified as redis-py verifies it: the same URL options (`ssl_ca_certs`,
`ssl_cert_reqs`, `ssl_check_hostname`, `ssl_certfile`, ...) and the same defaults, since the TLS context is
redis-py's own, built from the URL by redis-py's parser. Otherwise the scripts would need a certificate the rest
of poolgate does not (or trust one it refuses).

Only scripts travel here (`EVALSHA`, then `EVAL` once after a Redis restart
forgot them); everything else (pub/sub, the admin API, rq) keeps redis-py.
`Script.start` sends a call in the current turn and hands back its answer's
future: no task and no coroutine per call. A `NOSCRIPT` answer is met by the
link itself, which sends the script's text in its place and answers the same
future, so a call once sent runs even if its caller stopped listening.
Errors are redis-py's own exception types, so callers see no difference. The
embedded store has no socket, so there `open_script_runner` hands back the
fakeredis client itself, which has the same `register_script`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import SSLConnection
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float

# A reply this late means Redis or the network is stuck; the connection is dropped and every waiting call fails.
_STUCK_AFTER_SEC = 30.0


def open_script_runner(redis_url: str, store: Any) -> Any:
    """What runs Lua scripts: a `ScriptLink` to Redis, or the embedded store itself."""
    return ScriptLink(redis_url) if redis_url else store


class Script:
    """A Lua script, called like redis-py's: `await script(keys=[...], args=[...])`, or `script.start(...)`."""

    def __init__(self, link: ScriptLink, text: str) -> None:
        self._link = link
        self._text = text.encode()
        self._sha = hashlib.sha1(self._text).hexdigest().encode()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        return await self.start(keys, args)

    def start(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> asyncio.Future[Any]:
        """The call, written in this turn of the event loop; its answer is the future returned.

        No task and no coroutine on a ready connection: the hot path pays for a future only, and
        a caller cancelled meanwhile does not unsend the call (the write goes out all the same).
        A Redis that forgot the script (`NOSCRIPT`, after a restart) is sent its text by the link,
        answering the same future. Before the connection is ready, a task waits for the handshake.
        """
        link = self._link
        if not link._ready:
            return asyncio.ensure_future(link.call(b"EVALSHA", self._sha, len(keys), *keys, *args, fallback=self))
        return link._send((b"EVALSHA", self._sha, len(keys), *keys, *args), self)

    def fallback(self, parts: tuple[Arg, ...]) -> tuple[Arg, ...]:
        """The `EVAL` for an `EVALSHA` Redis did not know: the same call with the script's text, which Redis keeps."""
        return (b"EVAL", self._text, *parts[2:])


class _Protocol(asyncio.Protocol):
    def __init__(self, link: ScriptLink) -> None:
        self._link = link
        self._reader = hiredis.Reader(replyError=ResponseError, notEnoughData=False)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._link._connected(self._transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        link = self._link
        while (reply := self._reader.gets()) is not False:
            link._answer(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._lost(self._transport)


class ScriptLink:
    """One pipelined Redis connection for Lua scripts, opened on first use and again after it drops."""

    def __init__(self, redis_url: str) -> None:
        self._url = urlsplit(redis_url)
        self._redis_url = redis_url
        self._tls: ssl.SSLContext | None = None  # built on the first `rediss://` connection
        self._transport: asyncio.Transport | None = None
        # True once the current connection's handshake was answered OK; only then may calls be written to it.
        self._ready = False
        self._connecting: asyncio.Future[None] | None = None
        # Calls written and not yet answered, in order: the future, when it was sent, and for a script the
        # call and the script itself, so a NOSCRIPT answer can be sent the script's text.
        self._waiting: deque[tuple[asyncio.Future[Any], float, tuple[Arg, ...] | None, Script | None]] = deque()
        self._outbox: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    def register_script(self, text: str) -> Script:
        return Script(self, text)

    async def call(self, *parts: Arg, fallback: Script | None = None) -> Any:
        while not self._ready:  # a loop: the connection may drop again between the handshake and this turn
            await self._connect()
        return await self._send(parts, fallback)

    async def aclose(self) -> None:
        self._ready = False
        self._outbox.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # --- sending -----------------------------------------------------------------------------------------

    def _send(self, parts: tuple[Arg, ...], fallback: Script | None = None) -> asyncio.Future[Any]:
        """Queue the call for this turn's write; `fallback` resends it as `EVAL` if Redis answers NOSCRIPT."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue(parts, reply, fallback)
        return reply

    def _queue(self, parts: tuple[Arg, ...], reply: asyncio.Future[Any], fallback: Script | None = None) -> None:
        loop = asyncio.get_running_loop()
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append(_encode(parts))
        self._waiting.append((reply, loop.time(), parts if fallback is not None else None, fallback))

    def _flush(self) -> None:
        if not self._outbox:  # emptied by a lost connection since this flush was scheduled
            return
        data = b"".join(self._outbox)
        self._outbox.clear()
        if self._ready and self._transport is not None:
            self._transport.write(data)
        else:
            self._fail_all(RedisConnectionError("the connection to Redis closed"))

    def _answer(self, reply: Any) -> None:
        future, _, parts, script = self._waiting.popleft()
        if script is not None and parts is not None and type(reply) is ResponseError and \
                str(reply).startswith("NOSCRIPT"):
            self._resend(future, script.fallback(parts))  # even for a caller cancelled meanwhile: it was sent
            return
        if not future.done():  # a caller that was cancelled no longer listens
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _resend(self, future: asyncio.Future[Any], parts: tuple[Arg, ...]) -> None:
        """Write `parts` answering `future`: Redis answers in order, so it joins the end of the line."""
        if not self._ready or self._transport is None:
            if not future.done():
                future.set_exception(RedisConnectionError("the connection to Redis was lost"))
            return
        self._queue(parts, future)

    # --- the connection ----------------------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        url = self._url
        try:
            if url.scheme == "unix":
                await loop.create_unix_connection(lambda: _Protocol(self), url.path)
            else:
                context = self._tls_context() if url.scheme == "rediss" else None
                await asyncio.wait_for(
                    loop.create_connection(lambda: _Protocol(self), url.hostname or "127.0.0.1", url.port or 6379,
                                           ssl=context),
                    timeout=10,
                )
        except (TimeoutError, OSError) as error:
            raise RedisConnectionError(f"could not connect to Redis for scripts: {type(error).__name__}") from None
        await self._handshake()

    def _tls_context(self) -> ssl.SSLContext:
        """redis-py's TLS context for this URL: its options and defaults (certificate and host name checked)."""
        if self._tls is None:
            options = parse_url(self._redis_url)
            options.pop("connection_class", None)
            self._tls = SSLConnection(**options).ssl_context.get()  # a connection object only: nothing is opened
        return self._tls

    async def _handshake(self) -> None:
        """AUTH and SELECT, written alone on the new connection; the link is ready once both answered OK."""
        commands: list[tuple[Arg, ...]] = []
        # redis-py's reading of the URL (`/5` or `?db=5`, `:pw@` or `?password=`), so scripts write where it reads
        options = parse_url(self._redis_url)
        password, username = options.get("password"), options.get("username")
        if password is not None:
            commands.append((b"AUTH", username, password) if username else (b"AUTH", password))
        database = int(options.get("db") or 0)
        if database:
            commands.append((b"SELECT", database))
        transport = self._transport
        if transport is None:
            raise RedisConnectionError("the connection to Redis was lost")
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        self._waiting.extend((answer, loop.time(), None, None) for answer in answers)
        if commands:
            transport.write(b"".join(_encode(command) for command in commands))
        try:
            await asyncio.gather(*answers)
        except ResponseError:
            await self.aclose()
            raise
        if self._transport is not transport:  # lost while the handshake was in flight: _lost failed the answers
            raise RedisConnectionError("the connection to Redis was lost")
        self._ready = True

    def _connected(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._ready = False
        if self._watchdog is not None:  # one watchdog per link, not one per connection it ever had
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(_STUCK_AFTER_SEC / 3, self._watch)

    def _lost(self, transport: asyncio.Transport | None) -> None:
        if self._transport is not None and transport is not self._transport:
            return  # an older connection's close, arriving after a new one opened: the new one is fine
        self._transport = None
        self._ready = False
        # Calls not yet written belong to the lost connection's turn; their callers are failed just below.
        self._outbox.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._fail_all(RedisConnectionError("the connection to Redis was lost"))

    def _watch(self) -> None:
        """Drop a connection whose oldest call has waited too long: Redis or the network is stuck."""
        loop = asyncio.get_running_loop()
        if self._waiting and loop.time() - self._waiting[0][1] > _STUCK_AFTER_SEC and self._transport is not None:
            self._transport.abort()
            self._fail_all(RedisTimeoutError(f"Redis did not answer a script call within {_STUCK_AFTER_SEC:g} s"))
            return
        self._watchdog = loop.call_later(_STUCK_AFTER_SEC / 3, self._watch)

    def _fail_all(self, error: Exception) -> None:
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)


def _encode(parts: tuple[Arg, ...]) -> bytes:
    """A command in RESP (an array of bulk strings), values encoded as redis-py encodes them; hiredis does it in C,
    at a third of the cost of doing it here."""
    return hiredis.pack_command(parts)  # type: ignore[arg-type]  # its stub takes a 1-tuple; any length works
