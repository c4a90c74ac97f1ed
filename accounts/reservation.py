"""A quota reservation: what admission set aside for one request, owned until the request settles.

Owned like a key lease (`gateway.settlement.LeaseHold`): one `async with`, and
returned exactly once whatever ends it. Settlement claims it (`claim`) and
corrects the user's count to what upstream reported in the same store call
that gives the key back; a request that never got that far (refused, failed,
cancelled) hands the whole reservation back when the `async with` ends.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accounts.budgets import HoldKeeper

log = logging.getLogger("poolgate.accounts")
_RELEASE = (Path(__file__).parent / "release.lua").read_text()


class Reservation:
    """`identity`: who was admitted ("user:{id}", "anon"); `user_key`: their hash ("" for nobody's quota)."""

    def __init__(
        self, store: Any, identity: str, user_key: str, family: str, tokens: int, *, special: bool = False,
    ) -> None:
        self._store = store
        self.special = special  # a `special` user: no quota, IP limit, rate limit or proxy cap applies
        self.identity = identity
        self.user_key = user_key
        self.family = family
        self.tokens = tokens
        self.done = not user_key  # nothing to give back for a caller without a quota
        # Money (accounts/budgets.py): the cost reserved against the monthly budget, and the month so far.
        self.holds_key = ""
        self.hold = ""  # "{request}|{micro-dollars}" in holds_key; "" when no cost was reserved
        self.month_cost = -1  # micro-dollars spent this budget month before this request (-1: unknown)
        self.month_requests = -1
        self._keeper: HoldKeeper | None = None

    def hold_cost(self, holds_key: str, hold: str, keeper: HoldKeeper) -> None:
        """The cost reservation admission made: kept alive while this request runs, dropped when it ends."""
        self.holds_key, self.hold = holds_key, hold
        if hold:
            self._keeper = keeper
            keeper.hold(holds_key, hold)

    def drop_hold(self) -> None:
        """Stop renewing the cost reservation (settlement or release removes it from the store)."""
        if self._keeper is not None:
            self._keeper.drop(self.holds_key, self.hold)
            self._keeper = None

    def claim(self) -> Reservation | None:
        """For settlement: this reservation, once; None when it was already settled or released."""
        if self.done:
            return None
        self.done = True
        self.drop_hold()
        return self

    async def release(self) -> None:
        """Give the whole reservation back (nothing was counted for it). A second call does nothing."""
        if self.claim() is None:
            return
        try:
            await asyncio.shield(self._store.eval(
                _RELEASE, 2, self.user_key, self.holds_key or self.user_key, f"used:{self.family}", self.tokens,
                self.hold))
        except Exception as error:  # counted high, never lost: the next quota refresh sets it right
            log.error("could not hand back a reservation of %s: %s", self.identity, type(error).__name__)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        await self.release()
