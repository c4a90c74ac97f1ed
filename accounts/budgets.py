"""Monthly budgets: who may spend how much a month, and the cost reservations that keep it exact.

A budget is checked and a request's worst case reserved in admission's script
(`admit.lua`, its "money" block): the month's spend (`cost:{YYYY-MM}` in the
user's hash) plus every live reservation (`{prefix}user:{id}:holds`, a ZSET of
"{request}|{micro-dollars}" scored by expiry on the store's clock) plus this
request's worst case must fit the budget. Settlement (`settle_lease.lua`)
removes the reservation and adds the actual cost in the call that returns the
key; a request that ends without settling removes it (`release.lua`).

A process that dies holding a reservation stops renewing it (`HoldKeeper`,
every third of LEASE_TTL_SEC, like key leases), so it expires within the lease
TTL and the next admission of that user reaps it: the money comes back, with
no sweeper and no gateway clock involved.

The budget table (`{prefix}budgets`, HASH of micro-dollars) is looked up in
AI Pipe's order: "user:{id}", the user's email, "@{domain}", "*"; else
MONTHLY_BUDGET_USD; 0 means no budget (as a token quota of 0 is none).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from catalog.prices import MICRO
from keypool.repeating import Repeating

log = logging.getLogger("poolgate.accounts")

_RENEW = """
-- Renew live cost reservations: KEYS[i] a user's holds ZSET, ARGV[1] ttl ms, ARGV[i+1] its member.
-- ZADD XX: a hold already settled, released or reaped is not brought back.
local t = redis.call('TIME')
local till = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', till, ARGV[i + 1])
  redis.call('PEXPIRE', key, tonumber(ARGV[1]) * 2)
end
return #KEYS
"""


def usd_to_micro(usd: float) -> int:
    return round(usd * MICRO)


def micro_to_usd(micro: int) -> float:
    return round(micro / MICRO, 6)


@dataclass(slots=True)
class BudgetPolicy:
    """The budget settings admission sends with every user's request."""

    default_usd: float = 0.0  # MONTHLY_BUDGET_USD (0: no default budget)
    time_zone: str = "UTC"  # BUDGET_TIME_ZONE: months turn at midnight on the 1st there
    hold_ttl_sec: float = 60.0  # LEASE_TTL_SEC: a dead process's reservation comes back after this
    _zone: ZoneInfo = field(init=False)
    _offset: tuple[float, int] = field(init=False, default=(0.0, 0))

    def __post_init__(self) -> None:
        self._zone = ZoneInfo(self.time_zone)

    @property
    def default_micro(self) -> int:
        return max(usd_to_micro(self.default_usd), 0)

    def offset_sec(self) -> int:
        """How far BUDGET_TIME_ZONE is ahead of UTC now; re-read once a minute (summer time)."""
        now = time.monotonic()
        if now >= self._offset[0]:
            delta = datetime.now(UTC).astimezone(self._zone).utcoffset()
            self._offset = (now + 60.0, int(delta.total_seconds()) if delta else 0)
        return self._offset[1]


def month_of(ms: int, policy: BudgetPolicy) -> str:
    """The budget month ("YYYY-MM") of a time, as the scripts count it (dispatch/month.lua)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(ZoneInfo(policy.time_zone))
    return f"{moment.year:04d}-{moment.month:02d}"


class HoldKeeper:
    """Keeps this process's live cost reservations alive, all in one store call a few times per TTL."""

    def __init__(self, store: Any, ttl_sec: float) -> None:
        self._store = store
        self._ttl_ms = int(ttl_sec * 1000)
        self._live: dict[tuple[str, str], None] = {}
        self._renewing = Repeating(self.renew_now, max(ttl_sec / 3, 0.05), name="poolgate-hold-keeper",
                                   failure="could not renew cost reservations", log=log)

    def hold(self, holds_key: str, member: str) -> None:
        self._live[(holds_key, member)] = None

    def drop(self, holds_key: str, member: str) -> None:
        self._live.pop((holds_key, member), None)

    def start(self) -> None:
        self._renewing.start()

    async def stop(self) -> None:
        await self._renewing.stop()

    async def renew_now(self) -> None:
        live = list(self._live)
        if live:
            await self._store.eval(_RENEW, len(live), *(k for k, _ in live), self._ttl_ms, *(m for _, m in live))


async def budget_of(store: Any, budgets_key: str, user_id: str, email: str, default_micro: int) -> int:
    """A user's monthly budget in micro-dollars (0: none), found as admission finds it (admit.lua): the budget
    table's "user:{id}", the email, "@{domain}", "*", else the default. A reader's copy of that lookup, for the
    usage pages; admission itself never calls it."""
    at = email.find("@")
    domain = email[at:] if 0 <= at < len(email) - 1 else ""
    found = await store.hmget(budgets_key, f"user:{user_id}", email or "-", domain or "-", "*")
    for value in found:
        if value is not None:
            return int(value)
    return default_micro


async def set_budgets(store: Any, budgets_key: str, budgets: dict[str, float]) -> None:
    """BUDGETS: write the budget table (USD) into the store, replacing it; {} leaves it alone."""
    if not budgets:
        return
    async with store.pipeline(transaction=True) as pipe:
        pipe.delete(budgets_key)
        pipe.hset(budgets_key, mapping={who: usd_to_micro(usd) for who, usd in budgets.items()})
        await pipe.execute()
