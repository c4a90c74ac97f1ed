"""Stage 5, admit: user tokens, the rate limiter and quotas, decided before any key is leased.

One store script (`accounts/admit.lua`) finds whose token it is, checks every
limit and reserves the request's estimated tokens against the user's quota, in
one atomic step on the store's clock. The reservation is owned by the request
(`async with`) and corrected at settlement to what upstream reported, or handed
back whole when the request never got that far. Refusals are said in the
route's dialect: 401 unknown token, 403 refused or banned user, 429 limited
(`Retry-After` and the proxy's own `x-ratelimit-*`) or over quota.

Admission costs no round trip of its own: its script is sent together with the
fast path's lease attempt (`Dispatcher.lease_key`), in the same write on the
hot path's one connection (gateway/script_link.py), and both answers come back
together. The lease tried is handed to the relay (`call.first_lease`) when the
call is admitted; when admission refuses (the rare path) it is handed straight back.

With no user token and the limiter off, nothing is asked of the store here.

Money (issue 13): every call gets its `Bill` here (the model's rates, looked
up once per model), and a user's call reserves its worst-case cost (its
counted prompt and maximum output at the model's price) against their monthly
budget in admission's same script; 429 `budget_exceeded` when it does not fit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from accounts.admission import AccountRefusal, Admission
from accounts.usage_record import Bill
from catalog.prices import FREE, PriceBook, Rates
from catalog.tokens import BYTES_PER_TOKEN
from dispatch import Dispatcher, NoKeyAvailable
from gateway.errors import GatewayError
from gateway.gatekeeper import Identity
from gateway.metrics import note_admission
from gateway.validation import UpstreamCall

log = logging.getLogger("poolgate.admission")
# Endpoints whose answer is generated text: a request naming no maximum output reserves the default.
_GENERATING = frozenset({"chat/completions", "completions", "responses", "messages"})
_REFUSAL_KINDS = {
    "unknown": "authentication", "disabled": "user_refused", "expired": "user_refused", "ip_limit": "user_refused",
    "revoked": "authentication", "banned": "banned", "limited": "rate_limited", "quota": "quota_exceeded",
    "budget": "budget_exceeded", "unpriced": "model_not_priced",
}


class AdmissionStage:
    def __init__(
        self, accounts: Admission, dispatcher: Dispatcher, *, default_output_tokens: int,
        prices: PriceBook | None = None,
    ) -> None:
        self._accounts = accounts
        self._dispatch = dispatcher
        self._default_output = default_output_tokens
        self._prices = prices or PriceBook(unknown_model_policy="free")

    def admit(self, call: UpstreamCall, identity: Identity) -> AbstractAsyncContextManager[None]:
        """`async with`: the call admitted, its identity and quota reservation set on it, or a GatewayError.

        The reservation is handed back when the block ends unless settlement corrected it first;
        the lease tried alongside, unless the relay took it. A call that asks nothing of the store
        holds nothing: its block is an empty one.
        """
        rates = self._prices.rates(call.model, call.provider) if call.model else FREE  # a models list costs nothing
        call.bill = Bill.start(call.model or "", call.family, rates, self._accounts.budgets.offset_sec())
        if not self.asks_store(identity):
            call.exempt_from_caps = identity.kind == "admin"
            return _NOTHING_HELD
        return self._admitted(call, identity, rates)

    @asynccontextmanager
    async def _admitted(self, call: UpstreamCall, identity: Identity, rates: Rates | None) -> AsyncIterator[None]:
        assert call.bill is not None
        tokens = self.estimate(call)
        prompt = tokens - self._output_allowed(call)
        cost_reserve = rates.worst_case_micro(prompt, tokens - prompt) if rates is not None else -1
        # Admission's script and the fast path's lease attempt are both sent now, in this turn of the event
        # loop: the link writes them together, one round trip for both, and no task waits on either.
        admitting = self._accounts.send(
            identity.token_hash, identity.address, call.family, tokens,
            image=call.endpoint == "images/generations", cost_reserve=cost_reserve,
        )
        answered = False
        try:
            call.first_lease = self._dispatch.send_lease(call.provider, call.family)
            try:
                answer = await asyncio.shield(admitting)
                answered = True  # read at once: from here on the reservation is this block's
                reservation = self._accounts.read(answer, call.family)
            except AccountRefusal as refusal:
                note_admission(call.family, refusal.kind)
                raise _error(refusal, identity.session_method) from None
            note_admission(call.family, "admitted", reservation.tokens if reservation.user_key else 0)
            async with reservation:
                if reservation.identity.startswith("user:"):
                    call.identity = reservation.identity
                call.reservation = reservation
                call.bill.month_cost, call.bill.month_requests = reservation.month_cost, reservation.month_requests
                call.exempt_from_caps = reservation.special
                yield
        finally:
            leasing, call.first_lease = call.first_lease, None
            if leasing is not None:  # the relay never took it (refused, or the request ended first)
                await self._hand_back(leasing, call.provider, call.family)
            if not answered:  # cancelled before the answer was read: a reservation it made goes back
                admitting.add_done_callback(functools.partial(self._release_when_admitted, call.family))

    def asks_store(self, identity: Identity) -> bool:
        """Whether admitting this identity takes the store's script (and reserves from the prompt's count)."""
        return identity.kind != "admin" and self._accounts.needed(identity.token_hash)

    def estimate(self, call: UpstreamCall) -> int:
        """Tokens to reserve: the prompt as the request policy counted it (else estimated from the body's
        size, ~4 bytes a token, which overestimates a JSON body), plus the most output the request allows."""
        prompt = call.prompt_tokens or math.ceil(len(call.body) / BYTES_PER_TOKEN)
        return prompt + self._output_allowed(call)

    def _output_allowed(self, call: UpstreamCall) -> int:
        return call.max_output if call.max_output is not None else \
            self._default_output if call.endpoint in _GENERATING else 0

    async def _hand_back(self, leasing: asyncio.Future[Any], provider: str, family: str) -> None:
        """Give back, uncounted, the lease tried alongside admission: now, or when its answer arrives."""
        if not leasing.done():
            leasing.add_done_callback(lambda done: _in_background(self._give_back(done, provider, family)))
            return
        await asyncio.shield(self._give_back(leasing, provider, family))

    async def _give_back(self, leasing: asyncio.Future[Any], provider: str, family: str) -> None:
        if leasing.cancelled() or leasing.exception() is not None:
            return  # the store failed: no lease was made
        try:
            lease = self._dispatch.read_lease(provider, leasing.result())
        except NoKeyAvailable:
            return  # no key was free
        try:
            await self._dispatch.settle(lease, family)
        except Exception as error:  # the lease expires by itself
            log.error("could not hand back the lease of key %s: %s", lease.key_id, type(error).__name__)

    def _release_when_admitted(self, family: str, admitting: asyncio.Future[Any]) -> None:
        if admitting.cancelled() or admitting.exception() is not None:
            return
        try:
            reservation = self._accounts.read(admitting.result(), family)
        except AccountRefusal:
            return  # refused: nothing was reserved
        _in_background(reservation.release())


_NOTHING_HELD: AbstractAsyncContextManager[None] = nullcontext()  # stateless: one serves every call
_background: set[asyncio.Future[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    _background.add(task)  # held until done: the loop keeps only a weak reference to a task
    task.add_done_callback(_background.discard)


def _error(refusal: AccountRefusal, session_method: str = "") -> GatewayError:
    if refusal.kind == "revoked" and session_method == "app_store":  # Pico's clients sign in again on 407
        return GatewayError("session_expired", refusal.message)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if refusal.kind == "limited" and refusal.retry_after_sec is not None:
        reset = max(1, math.ceil(refusal.retry_after_sec))
        headers = (
            (b"x-ratelimit-limit-requests", str(refusal.limit).encode()),
            (b"x-ratelimit-remaining-requests", b"0"),
            (b"x-ratelimit-reset-requests", f"{reset}s".encode()),
        )
    return GatewayError(_REFUSAL_KINDS[refusal.kind], refusal.message, retry_after_sec=refusal.retry_after_sec,
                        headers=headers)
