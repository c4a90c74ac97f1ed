"""Relaying an upstream reply to the client, whole or as a stream, then settling it.

Streams go out event by event as upstream produces them, never buffered whole.
A client that hangs up mid-stream cancels the upstream request at once, and
its key goes back to the pool in the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from gateway.providers.base import Provider
from gateway.relay import UpstreamReply, close_quietly
from gateway.settlement import settle_usage
from gateway.sse import EventFramer
from gateway.upstream_client import read_body
from gateway.validation import UpstreamCall
from keypool import KeyPool

log = logging.getLogger("poolgate.relay")

Send = Any
Receive = Any


async def deliver_whole(reply: UpstreamReply, call: UpstreamCall, provider: Provider, pool: KeyPool,
                        send: Send) -> None:
    """A non-streaming reply: relayed byte-exact, then its usage is recorded."""
    assert reply.response is not None
    try:
        body = await read_body(reply.response)
    finally:
        await close_quietly(reply.response)
    await _send_complete(send, reply.status, reply.headers, body)
    await settle_usage(pool, reply.lease, call.family, provider.usage_from_body(body), call.identity)


async def deliver_stream(reply: UpstreamReply, call: UpstreamCall, provider: Provider, pool: KeyPool,
                         send: Send, receive: Receive) -> None:
    """A streamed reply, relayed while it is produced; a client hang-up stops it at once."""
    pump = asyncio.ensure_future(_pump_stream(reply, call, provider, pool, send))
    hang_up = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((pump, hang_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (hang_up, pump):
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _pump_stream(reply: UpstreamReply, call: UpstreamCall, provider: Provider, pool: KeyPool,
                       send: Send) -> None:
    assert reply.response is not None
    reader = provider.stream_reader(call.drop_usage_chunk)
    framer = EventFramer()
    try:
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        try:
            async for chunk in reply.response.aiter_raw():
                events = [event for event in framer.feed(chunk) if reader.read(event)]
                if events:
                    await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})
        except httpx.HTTPError as exc:  # upstream broke off mid-stream: end ours where theirs ended
            log.warning("upstream %s stream broke off: %s", call.provider, type(exc).__name__)
        tail = framer.flush()
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    finally:
        # Runs on completion, on upstream failure and on cancellation by a client hang-up alike.
        await close_quietly(reply.response)
        await asyncio.shield(settle_usage(pool, reply.lease, call.family, reader.usage, call.identity))


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def deliver_read(reply: UpstreamReply, send: Send) -> None:
    """A reply whose body was already read (a client error passed through)."""
    await _send_complete(send, reply.status, reply.headers, reply.body or b"")


async def _send_complete(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
