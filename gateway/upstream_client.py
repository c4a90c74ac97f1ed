"""The HTTP client poolgate talks to upstream with: httpx's API over the aiohttp transport.

Requests go straight to the transport (`handle_async_request`, httpx's own
transport interface) rather than through `httpx.AsyncClient`: the client's
cookie jar would carry cookies set by upstream for one key into requests made
with every other key, and a key-carrying request must never follow a
redirect. Skipping those layers is also a fifth of the relay's CPU time.
"""

from __future__ import annotations

import time

import httpx
from httpx_aiohttp import AiohttpTransport

from gateway.metrics import note_upstream_time


class UpstreamClient:
    """One pooled connection set per provider, shared by every request of this process."""

    def __init__(self, *, timeout_sec: float, max_connections: int = 1000) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=200, keepalive_expiry=60)
        self._transport = AiohttpTransport(limits=limits)
        self._timeout = httpx.Timeout(connect=15.0, read=timeout_sec, write=60.0, pool=timeout_sec).as_dict()
        self._urls: dict[str, httpx.URL] = {}  # parsing a URL is a twentieth of a request's CPU; there are few

    async def send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response:
        """Send and return as soon as the status and headers are in; the body is read by the caller."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 4096:  # query strings make URLs many; keep the cache small
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        # Given as a stream, the body skips httpx's content encoding and its Host and Content-Length
        # headers, which aiohttp writes itself; read() makes it the `request.content` the transport sends.
        request = httpx.Request(method, parsed, headers=headers, stream=httpx.ByteStream(body),
                                extensions={"timeout": self._timeout})
        request.read()
        started = time.perf_counter()
        try:
            return await self._transport.handle_async_request(request)
        finally:  # upstream's share of the request's time, which /metrics' added latency leaves out
            note_upstream_time(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._transport.aclose()


async def read_body(response: httpx.Response) -> bytes:
    """The body as upstream sent it (poolgate asks for `identity`, so there is nothing to decode)."""
    chunks = [chunk async for chunk in response.aiter_raw()]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
