"""Dispatch: where a waiting request meets a free key.

Two scripts, one round trip each, are the whole meeting: `lease_key.lua`
leases the best key for a family (the fast path, or the head of the family's
queue claiming it), reaping leases and tickets whose holders died and waking
whoever is next; `settle_lease.lua` gives a lease back with what its reply
taught about the key and wakes the head of each queue the key serves. They
read key state as `keypool` keeps it and tickets as `queues` lays them out, so
neither of those rooms knows the other: keypool holds keys, queues hold order,
dispatch matches them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from dispatch.schema import DispatchSchema
from keypool import OK, KeyLease, KeyPool, RateBudget, Usage
from keypool.leases import LeaseKeeper
from keypool.pool import OVER_QUOTA, REVOKED
from keypool.scripts import script_source, started, unique_ids

_HERE = Path(__file__).parent
# Usage events kept in the store at most (about): the mover drains them (accounts/usage_mover.py); a mover down
# for long loses the oldest past this rather than filling the store's memory.
EVENTS_MAX = 1_000_000


@dataclass(slots=True)
class SettleMoney:
    """A counted settlement's money (issue 13): what goes in, and the month's figures that come back.

    `cost` (micro-dollars) replaces the cost reservation `hold` made at admission (in `holds_key`);
    `event` is the usage record appended to the events stream, as XADD's field, value, ... list. After the
    call, `month_cost` and `month_requests` hold the month's totals of whoever was served (-1: not counted).
    """

    cost: int
    event: list[str]
    tz_offset: int = 0
    holds_key: str = ""
    hold: str = ""
    month_cost: int = field(default=-1)
    month_requests: int = field(default=-1)
# Additive increase of a key's learned concurrency per reply served at it: ten such replies
# try one more request at once. Slow, because each probe past the true limit costs a 429.
LIMIT_STEP = 0.1


class NoKeyAvailable(Exception):
    """No key may serve this request now.

    `reason` is "no_keys" when none ever could (not configured, or all revoked);
    "unavailable" when keys exist but are busy, resting or paced
    (`retry_after_sec`: when the first comes back, 0 if unknown); "queued" when
    others are already waiting for the family; for a queued ticket, "behind"
    (`position` ahead of it; next in line, `retry_after_sec` is when the head's ticket
    expires unless its process renews it) or "gone" (the ticket expired).
    """

    def __init__(self, reason: str, retry_after_sec: float = 0.0, position: int = 0, at_ms: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_sec = retry_after_sec
        self.position = position
        self.at_ms = at_ms  # the store's clock when this was decided


class Dispatcher:
    def __init__(
        self, pool: KeyPool, lease_ttl_sec: float, *, key_concurrency: int = 0, scripts: Any = None,
    ) -> None:
        self.pool = pool
        self.schema = DispatchSchema(pool.schema.prefix)
        self._lease_ttl_ms = int(lease_ttl_sec * 1000)
        self._key_concurrency = key_concurrency
        redis = pool.store
        # The hot path's scripts may run over a leaner link than the store (gateway/script_link.py).
        self.scripts = scripts if scripts is not None else redis
        self._lease_script = started(self.scripts.register_script(script_source("lease_key.lua", _HERE)))
        self._settle_script = started(self.scripts.register_script(
            (_HERE / "month.lua").read_text() + "\n" + script_source("settle_lease.lua", _HERE)))
        # The scripts' key names per family (and provider), built once: a request would build a dozen strings.
        self._lease_keys: dict[tuple[str, str], list[str]] = {}
        self._settle_keys: dict[str, list[str]] = {}
        self._lease_ids = unique_ids()
        self.keeper = LeaseKeeper(redis, pool.schema.leases, lease_ttl_sec)
        # Told when traffic retires a key (revoked / over_quota), so it can be rechecked later.
        self.on_retired: Callable[[str, str], Awaitable[None]] | None = None

    async def lease_key(self, provider: str, family: str, *, ticket: str = "") -> KeyLease:
        """Lease the best key for the family, or raise NoKeyAvailable. One round trip.

        Without a ticket this is the fast path, which yields to anyone already
        queued for the family; with one, it claims the key only for the head.
        """
        return self.read_lease(provider, await self.send_lease(provider, family, ticket=ticket))

    def send_lease(self, provider: str, family: str, *, ticket: str = "") -> asyncio.Future[Any]:
        """`lease_key`'s store call, sent in this turn of the event loop; its answer is for `read_lease`."""
        keys = self._lease_keys.get((provider, family))
        if keys is None:
            q = self.schema
            keys = _remembered(self._lease_keys, (provider, family), [
                self.pool.schema.leases, *q.lease_keys(family), *self.pool.schema.candidate_keys(provider, family)])
        return self._lease_script(keys, [
            self.pool.schema.prefix, family, self._lease_ttl_ms, next(self._lease_ids), ticket,
            self._key_concurrency, self.schema.waiting_prefix, self.schema.wake_channel,
        ])

    def read_lease(self, provider: str, result: Any) -> KeyLease:
        """The lease `send_lease`'s answer made, held (renewed) from now on; or NoKeyAvailable."""
        if int(result[0]) != 1:
            reason = _text(result[1])
            n = int(result[2])
            at_ms = int(result[4])
            if reason == "behind":
                raise NoKeyAvailable(reason, int(result[3]) / 1000, position=n, at_ms=at_ms)
            raise NoKeyAvailable(reason, max(n, 0) / 1000, at_ms=at_ms)
        lease = KeyLease(
            lease_id=_text(result[2]),
            key_id=_text(result[1]),
            provider=provider,
            secret=_text(result[3]),
            organization=_text(result[4]),
            leased_at_ms=int(result[5]),
        )
        self.keeper.hold(lease.lease_id)
        return lease

    async def settle(
        self, lease: KeyLease, family: str, outcome: str = OK, *, money: SettleMoney | None = None, **details: Any,
    ) -> str | None:
        """Give the lease back, record usage and what the attempt taught about the key. One round trip.

        `details` are `send_settlement`'s. A key the reply showed revoked or out of quota is told to `on_retired`.
        """
        new_status = self.read_settlement(await self.send_settlement(lease, family, outcome, money=money, **details),
                                          money)
        if outcome in (OVER_QUOTA, REVOKED) and new_status == outcome and self.on_retired is not None:
            await self.on_retired(lease.key_id, outcome)
        return new_status

    def send_settlement(
        self,
        lease: KeyLease,
        family: str,
        outcome: str = OK,
        *,
        usage: Usage | None = None,
        cooldown_sec: float = 0.0,
        reason: str = "",
        identity: str = "",
        budget: RateBudget | None = None,
        estimated: bool = False,
        account: str = "",
        reserved: int = 0,
        money: SettleMoney | None = None,
    ) -> asyncio.Future[Any]:
        """The settlement, sent in this turn of the event loop; its answer is for `read_settlement`.

        `estimated`: the usage was counted by the gateway because upstream's own report never came.
        `account`: the user hash the usage is counted to, whose `used:{family}` holds `reserved` tokens
        set aside at admission; with counted usage, they are corrected to it in the same step.
        `money`: with counted usage, its cost and usage event are recorded in the same step too.
        """
        self.keeper.drop(lease.lease_id)
        counted = usage is not None
        usage = usage or Usage()
        budget = budget or RateBudget()
        q = self.schema
        schema = self.pool.schema
        details = {
            "prefix": schema.prefix,
            "lease": lease.lease_id,
            "outcome": outcome,
            "cooldown_ms": int(cooldown_sec * 1000),
            "counted": counted,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "estimated": estimated and counted,
            "reason": reason[:200],
            "identity": identity if counted else "",
            "requests_remaining": budget.requests_remaining,
            "requests_reset_in_ms": budget.requests_reset_in_ms,
            "tokens_remaining": budget.tokens_remaining,
            "tokens_reset_in_ms": budget.tokens_reset_in_ms,
            "tier": budget.tier,
            "max_inflight": self._key_concurrency,
            "limit_step": LIMIT_STEP,
            "queue_prefix": q.queue_prefix,
            "wake": q.wake_channel,
            "family": family,
            "account": bool(account) and counted,
            "reserved": reserved,
            "cost": money.cost if money is not None else 0,
            "hold": money.hold if money is not None else "",
            "tz_offset": money.tz_offset if money is not None else 0,
            "event": money.event if money is not None else ["key", lease.key_id],
            "events_max": EVENTS_MAX,
        }
        by_family = self._settle_keys.get(family)
        if by_family is None:
            by_family = _remembered(self._settle_keys, family, [
                schema.leases,
                schema.family_usage(family),
                schema.total_usage,
                schema.active_identities,
                q.queued_families,
                q.tickets,
                schema.prefix + "usage_events",  # accounts/schema.py: AccountsSchema.usage_events
            ])
        keys = [schema.key(lease.key_id), *by_family]
        if account and counted:
            keys += (account, money.holds_key if money is not None and money.holds_key else account + ":holds")
        # msgspec: json.dumps's compact form byte for byte, at a tenth of its CPU
        return self._settle_script(keys, [msgspec.json.encode(details)])

    @staticmethod
    def read_settlement(answer: Any, money: SettleMoney | None = None) -> str | None:
        """The key's status after a settlement (None: unchanged); the month's figures set on `money`."""
        if money is not None:
            money.month_cost, money.month_requests = int(answer[2]), int(answer[3])
        return _text(answer[0]) or None


def _remembered(memo: dict[Any, list[str]], at: Any, keys: list[str]) -> list[str]:
    if len(memo) >= 1024:  # families are few; this only bounds a store of made-up ones
        memo.clear()
    memo[at] = keys
    return keys


def _text(value: Any) -> str:
    return value.decode() if type(value) is bytes else str(value)
