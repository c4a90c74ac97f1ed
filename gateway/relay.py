"""Stages 6 and 7, lease and relay: send the call upstream with a real key.

A key is leased for each attempt (`queues.waiting`: at once, or after a fair
wait in the family's queue). When upstream says the key is rate-limited, out of
quota or revoked, the key is rested or retired and the call lines up again,
keeping its place, for the next key that can serve it; 5xx answers and broken
connections are retried with backoff.
The client sees none of it unless every attempt fails. What reaches the
client is the upstream reply as it came — streams event by event — with only
allow-listed headers and never a key (`gateway.providers.scrub`). A redirect
is not followed and never passed on: it counts as upstream failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from dispatch import Dispatcher
from gateway.client_link import ClientLink
from gateway.errors import GatewayError
from gateway.metrics import note_upstream
from gateway.providers import KeyVerdict, Provider, scrub_secret, scrubber_for
from gateway.settlement import LeaseHold, RelayedEvents
from gateway.upstream_client import UpstreamClient, read_body
from gateway.validation import UpstreamCall
from keypool import FAILED, OK, KeyLease, RateBudget
from queues.waiting import FamilyQueues, Place

log = logging.getLogger("poolgate.relay")

# Client headers worth passing on; everything else (cookies, credentials, the client's address) stays here.
_FORWARDED_REQUEST_HEADERS = frozenset(
    {b"content-type", b"accept", b"user-agent", b"anthropic-version", b"anthropic-beta", b"openai-beta"}
)
# Upstream headers a client may see, and no others (README, "What reaches the client"): rate-limit headers
# describe a pool key, not the client's allowance; cookies, organization and auth challenges belong to the key.
_FORWARDED_RESPONSE_HEADERS = frozenset(
    {b"content-type", b"x-request-id", b"request-id", b"openai-processing-ms", b"openai-version", b"cache-control"}
)


@dataclass(slots=True)
class UpstreamReply:
    """An upstream answer ready to relay: its lease is held until the body has been relayed and settled."""

    status: int
    headers: list[tuple[bytes, bytes]]
    lease: KeyLease
    response: httpx.Response | None  # open, when the body is still to be read
    body: bytes | None = None  # already read (a client error passed through)
    budget: RateBudget | None = None  # the key's rate-limit budget as this reply reported it
    waited_ms: int = 0  # time spent in the queue
    hold: LeaseHold | None = None  # owns the lease; settled once, by delivery or when `Relay.open` ends


class Relay:
    def __init__(
        self,
        pool: Dispatcher,
        queues: FamilyQueues,
        providers: dict[str, Provider],
        clients: dict[str, UpstreamClient],
        *,
        upstream_retries: int,
        max_key_attempts: int,
    ) -> None:
        self._pool = pool
        self._queues = queues
        self._providers = providers
        self._clients = clients
        self._upstream_retries = upstream_retries
        self._max_key_attempts = max_key_attempts

    def provider(self, name: str) -> Provider:
        return self._providers[name]

    @contextlib.asynccontextmanager
    async def open(
        self, call: UpstreamCall, client_headers: dict[bytes, bytes], link: ClientLink
    ) -> AsyncIterator[UpstreamReply]:
        """`async with`: upstream's answer, started with a leased key, moving to other keys as upstream requires.

        Each attempt's lease is one `LeaseHold`, entered where it is leased: an attempt that
        fails gives its key back before the next begins, and the reply's lease is returned
        when the `async with` ends, whatever ended it (a relayed body, an error, the client
        leaving, a cancellation).
        """
        provider = self._providers[call.provider]
        client = self._clients[call.provider]
        url = f"{provider.base_url}{call.path}" + (f"?{call.query}" if call.query else "")
        forwarded = [(k, v) for k, v in client_headers.items() if k in _FORWARDED_REQUEST_HEADERS or
                     k.startswith(b"x-stainless-")]
        forwarded.append((b"accept-encoding", b"identity"))
        refused_keys = 0
        server_failures = 0
        place = Place()
        keep_alive = link.keep_alive_while_queued if call.stream else None
        while True:
            # A rate-limited key rests until its cooldown ends, so the call simply waits its turn again.
            # A client leaving while queued cancels this wait (ClientLink.while_present); the queue
            # watches for it too, since its store calls can swallow a cancellation.
            lease = await self._queues.acquire(
                call.provider, call.family, call.identity, place,
                prompt_bytes=len(call.body), on_wait=keep_alive, hang_up=lambda: link.hang_up,
                first_try=call.first_lease,
            )
            # The fast-path try made with admission was this attempt's, and is spent. Had the wait ended in an
            # exception, admission would hand it back (a lease it made, if it was never read; else nothing).
            call.first_lease = None
            async with LeaseHold(self._pool, lease, call.family, call.reservation, call.bill, place.waited_ms) as hold:
                headers = forwarded + provider.auth_headers(lease, client_headers)
                try:
                    response = await client.send(call.method, url, headers, call.body)
                    note_upstream(call.provider, lease.key_id, response.status_code)  # /metrics, failure log
                except asyncio.CancelledError:
                    if link.gone:  # upstream has the prompt: what the client asked for is counted
                        await hold.settle_estimated(call.body, RelayedEvents(provider.stream_text), None,
                                                    call.identity, None)
                    raise
                except httpx.HTTPError as exc:
                    note_upstream(call.provider, lease.key_id, 0)
                    await hold.settle(FAILED)
                    server_failures += 1
                    log.warning("upstream %s: %s on key %s", call.provider, type(exc).__name__, lease.key_id)
                    await self._back_off_or_fail(call, server_failures, f"could not reach upstream "
                                                                        f"({type(exc).__name__})")
                    continue
                if response.status_code < 300:
                    shown, named = _reply_headers(response, lease.secret)
                    shown.append((b"x-queue-wait-ms", str(place.waited_ms).encode()))
                    try:
                        yield UpstreamReply(
                            response.status_code,
                            shown,
                            lease,
                            response,
                            budget=provider.rate_budget(named),
                            waited_ms=place.waited_ms,
                            hold=hold,
                        )
                    finally:
                        await close_quietly(response)
                    return

                try:
                    body = await read_body(response)
                finally:
                    await close_quietly(response)
                if response.status_code < 400:
                    # A redirect is never the API's answer, and its body and Location may carry the key (a login
                    # page, a moved base URL). poolgate follows none: it is upstream failing, said in our words.
                    verdict: KeyVerdict | None = KeyVerdict(FAILED, reason=f"upstream: {response.status_code} redirect")
                else:
                    verdict = provider.judge_failure(response.status_code, _header_dict(response), body)
                if verdict is None:  # the client's own mistake: it gets upstream's answer, minus any key
                    await hold.settle(OK)
                    yield UpstreamReply(response.status_code, _safe_headers(response, lease.secret), lease, None,
                                        scrub_secret(body, lease.secret), hold=hold)
                    return
                await self._settle_failure(hold, verdict)
            last_problem = f"upstream answered {response.status_code}"
            if verdict.outcome == FAILED:
                server_failures += 1
                await self._back_off_or_fail(call, server_failures, last_problem)
            else:
                refused_keys += 1
                if refused_keys >= self._max_key_attempts:
                    raise GatewayError(
                        "upstream_failed",
                        f"Upstream refused this request {refused_keys} times in a row for {call.family} "
                        f"(last: {response.status_code}). Try again later.",
                    )

    @staticmethod
    async def _settle_failure(hold: LeaseHold, verdict: KeyVerdict) -> None:
        status = await hold.settle(verdict.outcome, cooldown_sec=verdict.cooldown_sec, reason=verdict.reason)
        if verdict.outcome != FAILED:
            log.warning("key %s is now %s (%s)", hold.lease.key_id, status, verdict.reason or verdict.outcome)

    async def _back_off_or_fail(self, call: UpstreamCall, failures: int, problem: str) -> None:
        if failures > self._upstream_retries:
            raise GatewayError(
                "upstream_failed", f"The upstream {call.provider} API failed after {failures} attempts: {problem}."
            )
        await asyncio.sleep(min(0.25 * 2 ** (failures - 1), 2.0))


def _header_dict(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


def _reply_headers(response: httpx.Response, secret: str) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """`_safe_headers`, and the rate-limit headers (names holding `ratelimit`) as `_header_dict` reads them, in one
    pass over the raw headers, for every reply relayed with a body: all that `Provider.rate_budget` reads.

    Values are decoded as Latin-1, as HTTP defines them; the rate-limit headers are ASCII.
    """
    scrub = scrubber_for(secret).scrub
    shown: list[tuple[bytes, bytes]] = []
    named: dict[str, str] = {}
    for raw_name, value in response.headers.raw:
        name = raw_name.lower()
        if name in _FORWARDED_RESPONSE_HEADERS:
            shown.append((name, scrub(value)))
        elif b"ratelimit" in name:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            named[key] = f"{named[key]}, {text}" if key in named else text  # repeated: joined, as httpx joins them
    return shown, named


def _safe_headers(response: httpx.Response, secret: str) -> list[tuple[bytes, bytes]]:
    """The allow-listed headers, their values scrubbed: an echoing upstream may put the key in a request id."""
    scrub = scrubber_for(secret).scrub
    return [
        (name, scrub(value)) for name, value in ((k.lower(), v) for k, v in response.headers.raw)
        if name in _FORWARDED_RESPONSE_HEADERS
    ]


async def close_quietly(response: Any) -> None:
    """Close upstream's connection, even from a request being cancelled (shielded)."""
    if response.is_closed:  # a body read to its end closed it: no task to shield
        return
    try:
        await asyncio.shield(response.aclose())
    except Exception:  # the connection is being dropped anyway
        pass
