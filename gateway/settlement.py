"""Stage 8, settle: give the key back and account for what was served.

Tokens come from upstream's own `usage` (the whole body, or the stream's usage
events); a reply without usage still counts as a prompt served. Accounting and
the lease's return are one atomic step, so nothing is counted twice or lost
when a process dies between them.

When upstream's usage never arrived whole (a stream the client left, or that
upstream broke off), the prompt and the text actually relayed are counted
here instead (`catalog.tokens`), and the record is marked as estimated
(`estimated_prompts` in the usage totals). Only that path pays for counting.

A user's quota reservation (`accounts.reservation`) is corrected to what was
counted in the same store call that gives the key back: settling a request
costs one round trip, users or not.

So does money (issue 13): the request's `Bill` prices its usage (integer
arithmetic, `catalog.prices`), and the cost, the cost reservation it replaces
and the usage event join that same call; the month's figures come back for the
reply's `cost` / `monthlyCost` / `monthlyRequests`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from accounts.reservation import Reservation
from accounts.usage_record import Bill
from catalog.tokens import count_tokens
from dispatch import Dispatcher
from gateway.providers.base import prompt_text
from keypool import FAILED, OK, KeyLease, RateBudget, Usage

log = logging.getLogger("poolgate.settle")


async def settle_usage(
    pool: Dispatcher, lease: KeyLease, family: str, usage: Usage | None, identity: str, budget: RateBudget | None,
    *, estimated: bool = False, reservation: Reservation | None = None, bill: Bill | None = None,
    waited_ms: int = 0,
) -> None:
    """Also records the key's rate-limit budget the reply reported, which paces the key from now on.

    `reservation`: already claimed by the caller; the user's count is corrected from it to `usage`.
    `bill`: prices the usage; the cost is recorded with it and the month's figures set on it.

    The store call is written before anything awaits, so a request cancelled from here on still
    settles; only the answer (the month's figures for the reply) is then not read.
    """
    usage = usage or Usage()
    try:
        money = bill.money(usage, identity=identity, key_id=lease.key_id, estimated=estimated,
                           waited_ms=waited_ms, reservation=reservation) if bill is not None else None
        answer = pool.send_settlement(lease, family, OK, usage=usage, identity=identity, budget=budget,
                                      estimated=estimated, account=reservation.user_key if reservation else "",
                                      reserved=reservation.tokens if reservation else 0, money=money)
    except Exception as exc:  # the lease will expire by itself
        _log_failure(lease, exc)
        return
    try:
        pool.read_settlement(await asyncio.shield(answer), money)
    except asyncio.CancelledError:
        asyncio.ensure_future(answer).add_done_callback(lambda done: _log_if_failed(lease, done))
        raise
    except Exception as exc:  # the reply has gone out, or goes out without its month; the lease expires by itself
        _log_failure(lease, exc)
        return
    if bill is not None and money is not None:
        bill.settled(money)


def _log_if_failed(lease: KeyLease, answer: asyncio.Future[Any]) -> None:
    if not answer.cancelled() and answer.exception() is not None:
        _log_failure(lease, answer.exception())  # type: ignore[arg-type]


def _log_failure(lease: KeyLease, error: BaseException) -> None:
    log.error("could not settle lease of key %s: %s", lease.key_id, type(error).__name__)


class LeaseHold:
    """One lease, owned in one place and given back exactly once: `async with` settles it on any exit.

    An exit by exception (cancellation included) returns it as FAILED; an exit without an
    explicit settlement returns it OK, uncounted. A second settlement is a no-op, so every
    path may settle without counting twice. The store call is sent before anything awaits
    (or, for a plain settlement, shielded): a request cancelled while it settles still gives
    its key back.

    A counted settlement claims the request's quota `reservation` (before anything awaits, so
    the reservation's own `async with` can no longer hand it back) and corrects it in the same call.
    """

    def __init__(
        self, pool: Dispatcher, lease: KeyLease, family: str, reservation: Reservation | None = None,
        bill: Bill | None = None, waited_ms: int = 0,
    ) -> None:
        self.pool = pool
        self.bill = bill
        self.waited_ms = waited_ms
        self.lease = lease
        self.family = family
        self.settled = False
        self.reservation = reservation

    async def settle(self, outcome: str = OK, **details: Any) -> str | None:
        if self.settled:
            return None
        self.settled = True
        return await asyncio.shield(self.pool.settle(self.lease, self.family, outcome, **details))

    async def settle_usage(
        self, usage: Usage | None, identity: str, budget: RateBudget | None, *, estimated: bool = False
    ) -> None:
        if self.settled:
            return
        self.settled = True
        claimed = self.reservation.claim() if self.reservation is not None else None
        await settle_usage(self.pool, self.lease, self.family, usage, identity, budget, estimated=estimated,
                           reservation=claimed, bill=self.bill, waited_ms=self.waited_ms)

    async def settle_estimated(
        self, request_body: bytes, relayed: RelayedEvents, reported: Usage | None, identity: str,
        budget: RateBudget | None,
    ) -> None:
        """Upstream's usage never arrived whole: count the prompt and what was relayed, then settle.

        The hold is claimed before the counting starts and the counting runs as a task of its
        own, so no other exit (a cancellation arriving meanwhile) returns the lease uncounted.
        """
        if self.settled:
            return
        self.settled = True
        claimed = self.reservation.claim() if self.reservation is not None else None
        await asyncio.shield(asyncio.ensure_future(
            self._count_and_settle(request_body, relayed, reported, identity, budget, claimed)))

    async def _count_and_settle(
        self, request_body: bytes, relayed: RelayedEvents, reported: Usage | None, identity: str,
        budget: RateBudget | None, reservation: Reservation | None,
    ) -> None:
        try:
            usage = await asyncio.to_thread(_estimate, request_body, relayed, reported)  # a long text takes CPU
        except Exception as error:  # never lose the settlement over an estimate
            log.error("could not estimate usage: %s", type(error).__name__)
            usage = reported or Usage()
        await settle_usage(self.pool, self.lease, self.family, usage, identity, budget, estimated=True,
                           reservation=reservation, bill=self.bill, waited_ms=self.waited_ms)

    async def __aenter__(self) -> LeaseHold:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.settled:
            return
        try:
            await self.settle(OK if exc_type is None else FAILED)
        except Exception as error:  # the lease will expire by itself
            _log_failure(self.lease, error)


class RelayedEvents:
    """A stream's events as relayed, kept only so a stream cut short can be counted.

    Past `HELD_BYTES` the events are boiled down to their text, so a long stream
    holds its answer's text, not its JSON envelopes.
    """

    HELD_BYTES = 256 << 10  # a stream of ~1,000 OpenAI tokens; 1,000 such streams at once hold 256 MB at most

    def __init__(self, text_of: Callable[[list[bytes]], str]) -> None:
        self._text_of = text_of
        self._events: list[bytes] = []
        self._held = 0
        self._texts: list[str] = []

    def extend(self, events: list[bytes]) -> None:
        self._events.extend(events)
        self._held += sum(map(len, events))
        if self._held > self.HELD_BYTES:
            self._texts.append(self._text_of(self._events))
            self._events = []
            self._held = 0

    def text(self) -> str:
        return "".join(self._texts) + self._text_of(self._events)


def _estimate(request_body: bytes, relayed: RelayedEvents, reported: Usage | None) -> Usage:
    # Upstream's own input count, when it gave one (Anthropic's `message_start`), beats ours.
    prompt = reported.input_tokens if reported is not None and reported.input_tokens > 0 else \
        count_tokens(prompt_text(request_body))
    return Usage(prompt, count_tokens(relayed.text()))

