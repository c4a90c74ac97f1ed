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
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import Settings


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

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._capped_as: str | None = None
        limits = self._limits()
        address = self.client[0] if self.client else ""
        if limits.capped(address):
            if self._open[address] >= limits.max_per_address:
                transport.close()
                return
            self._open[address] += 1
            self._capped_as = address
        self._arm(limits.header_timeout_sec)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a kept-alive connection's next request: its headers are now due
            self._arm(self._limits().header_timeout_sec)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self._limits().body_timeout_sec)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self._limits().body_timeout_sec)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._capped_as is not None:
            self._open[self._capped_as] -= 1
            if self._open[self._capped_as] <= 0:
                del self._open[self._capped_as]
            self._capped_as = None
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    @classmethod
    def _limits(cls) -> ClientLimits:
        if cls.limits is None:  # a worker process of `--workers N`: its settings come from the same environment
            cls.limits = ClientLimits.from_settings(Settings.from_env())
        return cls.limits


def guarded_protocol(settings: Settings) -> type[Any]:
    """The protocol class for uvicorn's `http` option, with this process's limits."""
    GuardedHttpToolsProtocol.limits = ClientLimits.from_settings(settings)
    return GuardedHttpToolsProtocol
