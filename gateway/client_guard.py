"""The server's edge: no client holds a socket for long without sending, nor many at once.

uvicorn gives a fresh connection all the time it likes to send its request
headers, and a request all the time it likes to send its body, so a few
thousand silent or trickling sockets (slowloris) would sit in the process for
ever. This protocol is uvicorn's own httptools one with three limits added:

- the headers of a request must arrive within `CLIENT_HEADER_TIMEOUT_SEC` of
  the connection opening (or of the request's first byte, on a kept-alive one);
- a body may pause at most `CLIENT_BODY_TIMEOUT_SEC` between two pieces;
- one address holds at most `MAX_CONNECTIONS_PER_ADDRESS` connections to a
  process; more are closed as they open. Addresses trusted as proxies
  (`FORWARDED_ALLOW_IPS`) are not capped: every client arrives through them.

Idle time between requests on a kept-alive connection is uvicorn's
`timeout_keep_alive`. A connection past a limit is closed; that is all it costs.

A connection keeps its deadline as a number; one sweep per process, every
`SWEEP_SEC`, closes the connections past theirs. A timer armed and cancelled
three times a request cost more than the rest of this module together, and a
limit of seconds needs no finer aim than that.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import Settings

SWEEP_SEC = 0.5  # a limit is enforced within this much more than itself


@dataclass(frozen=True, slots=True)
class ClientLimits:
    header_timeout_sec: float
    body_timeout_sec: float
    max_per_address: int  # 0: no cap
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None  # None: every address is trusted

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientLimits:
        return cls(
            settings.client_header_timeout_sec,
            settings.client_body_timeout_sec,
            settings.max_connections_per_address,
            _networks(settings.trusted_forwarders),
        )

    def capped(self, address: str) -> bool:
        """Whether connections from `address` count against the cap (a trusted proxy's do not)."""
        if not self.max_per_address or self.trusted is None:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return True
        return not any(ip in network for network in self.trusted)


def _networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if "*" in entries:
        return None
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name or a socket path: uvicorn may trust it, but it is no address to compare
    return tuple(networks)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; `limits` is set before the server starts."""

    limits: ClassVar[ClientLimits | None] = None
    _open: ClassVar[Counter[str]] = Counter()  # connections per capped address, in this process
    _guarded: ClassVar[set[GuardedHttpToolsProtocol]] = set()  # connections with a deadline, in this process
    _sweep: ClassVar[asyncio.TimerHandle | None] = None
    _sweep_loop: ClassVar[asyncio.AbstractEventLoop | None] = None  # a test may serve from a new loop each time

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
        self._deadline = 0.0  # loop time by which the next piece is due; 0: none
        self._capped_as: str | None = None
        limits = self._limits()
        address = self.client[0] if self.client else ""
        if limits.capped(address):
            if self._open[address] >= limits.max_per_address:
                transport.close()
                return
            self._open[address] += 1
            self._capped_as = address
        self._guarded.add(self)
        self._arm(limits.header_timeout_sec)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._deadline:  # a kept-alive connection's next request: its headers are now due
            self._arm(self._limits().header_timeout_sec)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._limits().body_timeout_sec)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self._limits().body_timeout_sec)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = 0.0

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = 0.0
        self._guarded.discard(self)
        if self._capped_as is not None:
            self._open[self._capped_as] -= 1
            if self._open[self._capped_as] <= 0:
                del self._open[self._capped_as]
            self._capped_as = None
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        cls = type(self)
        if cls._sweep is None or cls._sweep_loop is not self.loop:
            cls._sweep = self.loop.call_later(SWEEP_SEC, cls._close_the_late, self.loop)
            cls._sweep_loop = self.loop

    @classmethod
    def _close_the_late(cls, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not cls._sweep_loop:
            return
        cls._sweep = None
        now = loop.time()
        waiting = False
        for connection in list(cls._guarded):
            if not connection._deadline or connection.loop is not loop:
                continue
            if connection._deadline <= now:
                connection._deadline = 0.0
                if not connection.transport.is_closing():
                    connection.transport.close()
            else:
                waiting = True
        if waiting:  # otherwise the next deadline armed starts the sweep again
            cls._sweep = loop.call_later(SWEEP_SEC, cls._close_the_late, loop)

    @classmethod
    def _limits(cls) -> ClientLimits:
        if cls.limits is None:  # a worker process of `--workers N`: its settings come from the same environment
            cls.limits = ClientLimits.from_settings(Settings.from_env())
        return cls.limits


class _HeadWithBody:
    """A connection's transport that sends a response's head in the same system call as its body.

    uvicorn writes a response's status line and headers, then its body, each with its own `send`.
    A whole reply writes both in one turn of the event loop, so here the head waits for the
    body's write and goes out with it: one `send` instead of two (on loopback a `send` costs
    more than poolgate's own work on a request), and one segment to the client. A head whose body
    does not follow in that turn (a stream's, waiting for upstream) goes out at the turn's end;
    every other write goes out at once, as before. The rest is the transport's own (`__getattr__`).
    """

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif data.startswith(b"HTTP/1."):  # a status line: uvicorn's head of a response
            self._head = data
            self._loop.call_soon(self._send_head)
            return
        self._transport.write(data)

    def _send_head(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():  # a client gone meanwhile: nobody to tell
            self._transport.write(head)

    def close(self) -> None:
        self._send_head()
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(settings: Settings) -> type[Any]:
    """The protocol class for uvicorn's `http` option, with this process's limits."""
    GuardedHttpToolsProtocol.limits = ClientLimits.from_settings(settings)
    return GuardedHttpToolsProtocol
