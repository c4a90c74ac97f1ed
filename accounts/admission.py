"""Admission in the store: who a token belongs to, whether they may ask now, and their quota reserved.

One script (`admit.lua`) decides all of it and records the request in the same
step, on the store's clock, so two gateway processes can never together let a
person past a limit or a quota. What it refuses comes back as an
`AccountRefusal`; the gateway says it in the client's dialect. What it admits
comes back as a `Reservation`, which the request owns until it settles.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounts.budgets import BudgetPolicy, HoldKeeper, micro_to_usd
from accounts.refresh import next_refresh_at
from accounts.reservation import Reservation
from accounts.schema import AccountsSchema
from keypool.scripts import started, unique_ids

_HERE = Path(__file__).parent
_MONTH_LUA = _HERE.parent / "dispatch" / "month.lua"  # the budget month, as settlement counts it


@dataclass(frozen=True, slots=True)
class LimiterPolicy:
    """The rate limiter's settings (gateway/settings.py), as the script takes them."""

    enabled: bool = False
    user_per_minute: int = 0
    user_per_hour: int = 0
    user_ban_after: int = 0
    anon_per_minute: int = 0
    anon_per_hour: int = 0
    anon_ban_after: int = 0
    minute_block_sec: int = 300
    hour_block_sec: int = 3600
    image_per_minute: int = 0


class AccountRefusal(Exception):
    """The store refused this request; `kind` says why (the script's first word), `message` tells the client."""

    def __init__(self, kind: str, message: str, *, retry_after_sec: float | None = None, limit: int = 0) -> None:
        super().__init__(message)
        # unknown | revoked | disabled | expired | ip_limit | banned | limited | quota | budget | unpriced
        self.kind = kind
        self.message = message
        self.retry_after_sec = retry_after_sec
        self.limit = limit  # the limit that refused it ("limited" only)


class Admission:
    """Runs `admit.lua`: one round trip per request that needs it."""

    def __init__(
        self, scripts: Any, store: Any, schema: AccountsSchema, limiter: LimiterPolicy, *, max_ips: int = 0,
        max_ips_auto_ban: bool = False, quota_refresh_cron: str = "", budgets: BudgetPolicy | None = None,
    ) -> None:
        self.schema = schema
        self.limiter = limiter
        self._store = store
        self._script = started(
            scripts.register_script(_MONTH_LUA.read_text() + "\n" + (_HERE / "admit.lua").read_text()))
        self.budgets = budgets or BudgetPolicy()
        self.hold_keeper = HoldKeeper(store, self.budgets.hold_ttl_sec)  # started with the app (gateway/app.py)
        self._max_ips = max_ips
        self._auto_ban = max_ips_auto_ban
        self._quota_refresh_cron = quota_refresh_cron  # said in a quota refusal: when the quota comes back
        self._keys = [schema.user_tokens, schema.bans]
        self._request_ids = unique_ids()
        p = limiter
        # admit.lua's ARGV[7..18]: what never changes while the gateway runs, encoded once.
        self._settings_args = [
            schema.prefix, int(p.enabled), p.user_per_minute, p.user_per_hour, p.user_ban_after,
            p.anon_per_minute, p.anon_per_hour, p.anon_ban_after, p.minute_block_sec * 1000, p.hour_block_sec * 1000,
            max_ips, int(max_ips_auto_ban),
        ]

    def needed(self, token_hash: str) -> bool:
        """Whether a request must ask the store at all: a user token always, an anonymous caller only when limited."""
        return bool(token_hash) or self.limiter.enabled

    async def admit(
        self, token_hash: str, address: str, family: str, reserve: int, *, image: bool = False, cost_reserve: int = 0,
    ) -> Reservation:
        """Admit the request and reserve `reserve` tokens of the user's quota, or raise AccountRefusal.

        `cost_reserve`: the most the request may cost (micro-dollars), reserved against the user's monthly
        budget; -1 when its model has no known price (refused for a user with a budget).
        """
        return self.read(await self.send(token_hash, address, family, reserve, image=image,
                                         cost_reserve=cost_reserve), family)

    def send(
        self, token_hash: str, address: str, family: str, reserve: int, *, image: bool = False, cost_reserve: int = 0,
    ) -> asyncio.Future[Any]:
        """`admit`'s store call, sent in this turn of the event loop; its answer is for `read`."""
        return self._script(self._keys, [
            token_hash, address, family, max(int(reserve), 0), next(self._request_ids),
            self.limiter.image_per_minute if image else 0, *self._settings_args,
            cost_reserve, self.budgets.default_micro, self.budgets.offset_sec(), int(self.budgets.hold_ttl_sec * 1000),
        ])

    def read(self, result: Any, family: str) -> Reservation:
        """The reservation `send`'s answer made (held from now on: its cost hold is renewed), or AccountRefusal."""
        verdict = _text(result[0])
        if verdict == "ok":
            identity = _text(result[1])
            user_id = identity.removeprefix("user:") if identity.startswith("user:") else ""
            user_key = self.schema.user(user_id) if user_id else ""
            special = len(result) > 3 and int(result[3]) == 1  # exempt from quotas, limits and the proxy's caps
            reservation = Reservation(self._store, identity, user_key, family, int(result[2]), special=special)
            if len(result) > 6:  # the money block ran (a user): their month so far, and any cost reserved
                reservation.hold_cost(self.schema.user_holds(user_id), _text(result[4]), self.hold_keeper)
                reservation.month_cost, reservation.month_requests = int(result[5]), int(result[6])
            return reservation
        raise self._refusal(verdict, result[1:], family)

    def _refusal(self, verdict: str, rest: list[Any], family: str) -> AccountRefusal:
        if verdict == "unknown":
            return AccountRefusal(verdict, "This user token is not valid.")
        if verdict == "revoked":
            return AccountRefusal(verdict, "This session has ended: sign in again.")
        if verdict == "disabled":
            reason = _text(rest[0]) or "no reason was given"
            return AccountRefusal(verdict, f"This user token has been disabled: {reason}")
        if verdict == "expired":
            return AccountRefusal(verdict, "This temporary user token has expired.")
        if verdict == "ip_limit":
            tail = " The token has been disabled." if int(rest[0]) else ""
            return AccountRefusal(verdict, "No more IP addresses allowed for this token." + tail)
        if verdict == "banned":
            return AccountRefusal(
                verdict, f"Banned from this proxy: {_text(rest[2]) or 'by an admin'} Ask the admin to lift it.")
        if verdict == "limited":
            retry_sec = int(rest[0]) / 1000
            limit, window = int(rest[1]), _text(rest[2])
            per = "image generations a minute" if window == "image" else f"requests an {window}" \
                if window == "hour" else f"requests a {window}"
            return AccountRefusal(
                verdict, f"Rate limited: this proxy allows {limit} {per}. Try again in {retry_sec:.0f} s.",
                retry_after_sec=retry_sec, limit=limit,
            )
        if verdict == "budget":
            spent, budget, held, cost, resets_at = (int(v) for v in rest[:5])
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(resets_at / 1000))
            return AccountRefusal(
                verdict,
                f"Monthly budget exceeded: {_usd(spent)} spent this month of a {_usd(budget)} budget "
                f"({_usd(held)} more held by requests in flight), and this request may cost up to {_usd(cost)}. "
                f"The budget resets at {when}.",
                retry_after_sec=max(resets_at / 1000 - time.time(), 1.0),
            )
        if verdict == "unpriced":
            return AccountRefusal(
                verdict, "This model has no known price, so it cannot be charged to your monthly budget. "
                         "Ask the admin to price it (PRICES_OVERRIDE).")
        quota, used, reserve = (int(v) for v in rest[:3])
        refresh_at = next_refresh_at(self._quota_refresh_cron, time.time()) if self._quota_refresh_cron else None
        when = f" It refreshes at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(refresh_at))}." if refresh_at \
            else " It comes back when an admin refreshes it."
        return AccountRefusal(
            "quota",
            f"Token quota exceeded for {family}: {used} of {quota} tokens used, and this request may need "
            f"{reserve} (its prompt and its maximum output).{when}",
            retry_after_sec=refresh_at - time.time() if refresh_at else None,
        )


def _usd(micro: int) -> str:
    """$1.50, $0.0042, $0.000013: cents when that says it, otherwise as many digits as it takes."""
    text = f"{micro_to_usd(micro):.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
