"""Relaying an upstream reply to the client, whole or as a stream, then settling it.

Streams go out event by event as upstream produces them, never buffered whole.
A client that hangs up mid-stream cancels the upstream request at once, and
its key goes back to the pool in the same moment. Every reply says how long
it waited in the queue (`x-queue-wait-ms`; an SSE comment for a stream whose
headers went out while it waited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from gateway.client_link import ClientLink
from gateway.errors import GatewayError
from gateway.providers import Provider, scrubber_for
from gateway.relay import UpstreamReply, close_quietly
from gateway.sse import EventFramer
from gateway.upstream_client import read_body
from gateway.validation import UpstreamCall, listed_models_only
from keypool import Usage

log = logging.getLogger("poolgate.relay")

Send = Any


async def deliver_whole(reply: UpstreamReply, call: UpstreamCall, provider: Provider,
                        send: Send) -> None:
    """A non-streaming reply: relayed byte-exact but for any form of the key, then its usage is recorded."""
    assert reply.response is not None
    try:
        body = await read_body(reply.response)
    except httpx.HTTPError as exc:  # upstream broke off mid-body: the pipeline's hold returns the lease as FAILED
        log.warning("upstream %s body broke off: %s", call.provider, type(exc).__name__)
        raise GatewayError("upstream_failed", f"The upstream {call.provider} API broke off its reply.") from None
    finally:
        await close_quietly(reply.response)
    if call.listed_families and reply.status == 200:  # ALLOWED_MODEL_FAMILIES: a models list shows only those
        body = listed_models_only(body, call.provider, call.listed_families)
    await _send_complete(send, reply.status, reply.headers, scrubber_for(reply.lease.secret).scrub(body))
    await _settle(reply, call, provider.usage_from_body(body))


async def deliver_stream(reply: UpstreamReply, call: UpstreamCall, provider: Provider,
                         link: ClientLink) -> None:
    """A streamed reply, relayed while it is produced; a client hang-up stops it at once."""
    pump = asyncio.ensure_future(_pump_stream(reply, call, provider, link))
    try:
        await asyncio.wait((pump, link.hang_up), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def _pump_stream(reply: UpstreamReply, call: UpstreamCall, provider: Provider,
                       link: ClientLink) -> None:
    assert reply.response is not None
    send = link.send
    reader = provider.stream_reader(call.drop_usage_chunk)
    framer = EventFramer()
    scrub = scrubber_for(reply.lease.secret).scrub  # an event may echo the key, mid-stream as much as at the end
    try:
        if link.started:
            waited = f": poolgate: waited {reply.waited_ms} ms for a key\n\n".encode()
            await send({"type": "http.response.body", "body": waited, "more_body": True})
        else:
            await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
            link.started = True  # from here on an error can only be told as an SSE event
        try:
            async for chunk in reply.response.aiter_raw():
                events = [event for event in framer.feed(chunk) if reader.read(event)]
                if events:
                    await send({"type": "http.response.body", "body": scrub(b"".join(events)), "more_body": True})
        except httpx.HTTPError as exc:  # upstream broke off mid-stream: end ours where theirs ended
            log.warning("upstream %s stream broke off: %s", call.provider, type(exc).__name__)
        tail = scrub(framer.flush())
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    finally:
        # Runs on completion, on upstream failure and on cancellation by a client hang-up alike.
        await close_quietly(reply.response)
        await asyncio.shield(_settle(reply, call, reader.usage))


async def _settle(reply: UpstreamReply, call: UpstreamCall, usage: Usage | None) -> None:
    assert reply.hold is not None, "a reply with a body to relay is always held (gateway/relay.py)"
    await reply.hold.settle_usage(usage, call.identity, reply.budget)


async def deliver_read(reply: UpstreamReply, link: ClientLink) -> None:
    """A reply whose body was already read (a client error passed through)."""
    if link.started:
        await link.end_stream_with_error(reply.body or b"")
    else:
        await _send_complete(link.send, reply.status, reply.headers, reply.body or b"")


async def _send_complete(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
