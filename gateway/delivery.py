"""Relaying an upstream reply to the client, whole or as a stream, then settling it.

Streams go out event by event as upstream produces them, never buffered whole.
Everything goes out through the `ClientLink`, which bounds every write
(`STALLED_CLIENT_SEC`) and cancels delivery the moment the client hangs up;
upstream's connection is closed and the key settled on any exit. Every reply
says how long it waited in the queue (`x-queue-wait-ms`; an SSE comment for a
stream whose headers went out while it waited).

Every reply also carries its money (AI Proxy's headers, `accounts.usage_record`):
a whole reply is settled before it is sent, so its headers say `cost`,
`monthlyCost` and `monthlyRequests`; a stream's headers go out before its cost
is known, so they carry the month as it stood at admission, and the stream
ends with an SSE comment giving the request's cost and the month after it.

A stream that ends before upstream reported its usage (the client left,
upstream broke off) is counted from what was relayed, and marked as estimated
(`gateway.settlement`); complete streams never pay for that.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from gateway.client_link import ClientLink
from gateway.errors import GatewayError
from gateway.providers import Provider, scrubber_for
from gateway.relay import UpstreamReply
from gateway.settlement import RelayedEvents
from gateway.sse import EventFramer
from gateway.upstream_client import read_body
from gateway.validation import UpstreamCall, listed_models_only
from keypool import Usage

log = logging.getLogger("poolgate.relay")


async def deliver_whole(reply: UpstreamReply, call: UpstreamCall, provider: Provider, link: ClientLink) -> None:
    """A non-streaming reply: relayed byte-exact but for any form of the key, then its usage is recorded."""
    assert reply.response is not None
    try:
        body = await read_body(reply.response)
    except asyncio.CancelledError:
        if link.gone and reply.hold is not None:  # upstream has answered, or nearly: the prompt is counted
            await reply.hold.settle_estimated(call.body, RelayedEvents(provider.stream_text), None,
                                              call.identity, reply.budget)
        raise
    except httpx.HTTPError as exc:  # upstream broke off mid-body: the hold returns the lease as FAILED
        log.warning("upstream %s body broke off: %s", call.provider, type(exc).__name__)
        raise GatewayError("upstream_failed", f"The upstream {call.provider} API broke off its reply.") from None
    shown = body if call.translation is None else call.translation.reply(body)  # into the client's format
    if call.listed_families and reply.status == 200:  # ALLOWED_MODEL_FAMILIES: a models list shows only those
        shown = listed_models_only(body, call.provider, call.listed_families)
    # Upstream answered whole: settled before the reply is written, so its headers carry the cost, and its
    # usage counts even if the client leaves while we write.
    await _settle(reply, call, provider.usage_from_body(body))
    money = call.bill.headers() if call.bill is not None else []
    await link.send_complete(reply.status, reply.headers + money, scrubber_for(reply.lease.secret).scrub(shown))


async def deliver_stream(reply: UpstreamReply, call: UpstreamCall, provider: Provider, link: ClientLink) -> None:
    """A streamed reply, relayed while it is produced; cancelled by `link` when the client leaves or stalls."""
    assert reply.response is not None
    reader = provider.stream_reader(call.drop_usage_chunk)
    framer = EventFramer()
    scrub = scrubber_for(reply.lease.secret).scrub  # an event may echo the key, mid-stream as much as at the end
    relayed = RelayedEvents(provider.stream_text)  # upstream's events: counted in upstream's family
    # A translated stream: each upstream event becomes the client's events as it arrives (gateway.translate).
    translator = call.translation.stream() if call.translation is not None else None
    try:
        if link.started:
            await link.write(f": poolgate: waited {reply.waited_ms} ms for a key\n\n".encode())
        else:  # from here on an error can only be an SSE event; the month as admitted, the cost comes at the end
            await link.start(reply.status, reply.headers + (call.bill.headers() if call.bill is not None else []))
        try:
            async for chunk in reply.response.aiter_raw():
                events = [event for event in framer.feed(chunk) if reader.read(event)]
                if events:
                    relayed.extend(events)
                    out = b"".join(events) if translator is None else b"".join(map(translator.feed, events))
                    if out:
                        await link.write(scrub(out))
        except httpx.HTTPError as exc:  # upstream broke off mid-stream: end ours where theirs ended
            log.warning("upstream %s stream broke off: %s", call.provider, type(exc).__name__)
            if link.speaks_responses_api:  # that API tells a failed stream with its own last events
                raise GatewayError("upstream_failed",
                                   f"The upstream {call.provider} API broke off its reply.") from None
        # A translated stream cut short ends with the client dialect's error event, never silently.
        tail = framer.flush() if translator is None else translator.finish()
        if reader.complete and call.bill is not None:  # settled now, so the stream can end with its cost
            await _settle(reply, call, reader.usage)
            tail += call.bill.stream_comment()
        await link.write(scrub(tail), more=False)
    finally:
        # Runs on completion, on upstream failure and on cancellation alike (the reply's
        # connection is closed by `Relay.open`); the hold shields its store call, so a cancelled
        # request still settles, counted.
        assert reply.hold is not None
        if reader.complete:
            await _settle(reply, call, reader.usage)
        else:
            await reply.hold.settle_estimated(call.body, relayed, reader.usage, call.identity, reply.budget)


async def _settle(reply: UpstreamReply, call: UpstreamCall, usage: Usage | None) -> None:
    assert reply.hold is not None, "a reply with a body to relay is always held (gateway/relay.py)"
    await reply.hold.settle_usage(usage, call.identity, reply.budget)


async def deliver_read(reply: UpstreamReply, link: ClientLink, call: UpstreamCall) -> None:
    """A reply whose body was already read (a client error passed through, in the client's dialect)."""
    body = reply.body or b""
    if call.translation is not None:
        body = call.translation.error(body)
    if link.started:
        await link.end_stream_with_error(body)
    else:
        await link.send_complete(reply.status, reply.headers, body)
