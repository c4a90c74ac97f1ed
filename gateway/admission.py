"""Stage 5, admit: user tokens, the rate limiter and quotas, decided before any key is leased.

One store script (`accounts/admit.lua`) finds whose token it is, checks every
limit and reserves the request's estimated tokens against the user's quota, in
one atomic step on the store's clock. The reservation is owned by the request
(`async with`) and corrected at settlement to what upstream reported, or handed
back whole when the request never got that far. Refusals are said in the
route's dialect: 401 unknown token, 403 refused or banned user, 429 limited
(`Retry-After` and the proxy's own `x-ratelimit-*`) or over quota.

With no user token and the limiter off, nothing is asked of the store here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from accounts.admission import AccountRefusal, Admission
from catalog.tokens import BYTES_PER_TOKEN
from gateway.errors import GatewayError
from gateway.gatekeeper import Identity
from gateway.validation import UpstreamCall

# Endpoints whose answer is generated text: a request naming no maximum output reserves the default.
_GENERATING = frozenset({"chat/completions", "completions", "responses", "messages"})
_REFUSAL_KINDS = {
    "unknown": "authentication", "disabled": "user_refused", "expired": "user_refused", "ip_limit": "user_refused",
    "banned": "banned", "limited": "rate_limited", "quota": "quota_exceeded",
}


class AdmissionStage:
    def __init__(self, accounts: Admission, *, default_output_tokens: int) -> None:
        self._accounts = accounts
        self._default_output = default_output_tokens

    @asynccontextmanager
    async def admit(self, call: UpstreamCall, identity: Identity) -> AsyncIterator[None]:
        """`async with`: the call admitted, its identity and quota reservation set on it, or a GatewayError.

        The reservation is handed back when the block ends unless settlement corrected it first.
        """
        if identity.kind == "admin" or not self._accounts.needed(identity.token_hash):
            yield
            return
        try:
            reservation = await self._accounts.admit(
                identity.token_hash, identity.address, call.family, self.estimate(call),
                image=call.endpoint == "images/generations",
            )
        except AccountRefusal as refusal:
            raise _error(refusal) from None
        async with reservation:
            if reservation.identity.startswith("user:"):
                call.identity = reservation.identity
            call.reservation = reservation
            yield

    def estimate(self, call: UpstreamCall) -> int:
        """Tokens to reserve: the prompt, estimated from the body's size (~4 bytes a token, which
        overestimates a JSON body), plus the most output the request allows."""
        output = call.max_output if call.max_output is not None else \
            self._default_output if call.endpoint in _GENERATING else 0
        return math.ceil(len(call.body) / BYTES_PER_TOKEN) + output


def _error(refusal: AccountRefusal) -> GatewayError:
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

