"""The key pool: which keys exist, which may be used now, and leases on them.

Every decision that reads and changes shared state is one Lua script, so any
number of gateway processes sharing one Redis act as one pool: leasing a key
(`lease_key.lua`) and giving it back with what the request learned
(`settle_lease.lua`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keypool.keys import ConfiguredKey, mask_secret
from keypool.leases import LeaseKeeper
from keypool.schema import PoolSchema
from queues.schema import QueueSchema

_HERE = Path(__file__).parent

# What a finished attempt tells the pool about its key.
OK = "ok"
FAILED = "failed"
RATE_LIMITED = "rate_limited"
OVER_QUOTA = "over_quota"
REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class KeyLease:
    """The right to send one request with one key, until settled or expired."""

    lease_id: str
    key_id: str
    provider: str
    secret: str
    organization: str


class NoKeyAvailable(Exception):
    """No key may serve this request now.

    `reason` is "no_keys" when none ever could (not configured, or all revoked);
    "unavailable" when keys exist but are busy, resting or paced
    (`retry_after_sec`: when the first comes back, 0 if unknown); "queued" when
    others are already waiting for the family; for a queued ticket, "behind"
    (`position` ahead of it) or "gone" (the ticket expired).
    """

    def __init__(self, reason: str, retry_after_sec: float = 0.0, position: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_sec = retry_after_sec
        self.position = position


@dataclass(frozen=True, slots=True)
class RateBudget:
    """A key's upstream rate-limit budget as a reply reported it; -1 where it said nothing.

    `*_reset_ms` is when the budget next grows (absolute, ms), so a spent key is
    not offered to anyone before then.
    """

    requests_remaining: int = -1
    requests_reset_ms: int = -1
    tokens_remaining: int = -1
    tokens_reset_ms: int = -1
    tier: str = ""  # the usage tier the limits suggest (Anthropic), "" when unknown


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


class KeyPool:
    def __init__(
        self, redis: Any, schema: PoolSchema, lease_ttl_sec: float, *, key_concurrency: int = 0,
        scripts: Any = None,
    ) -> None:
        self._redis = redis
        self.schema = schema
        self.queue_schema = QueueSchema(schema.prefix)
        self._lease_ttl_ms = int(lease_ttl_sec * 1000)
        self._key_concurrency = key_concurrency
        # The hot path's scripts may run over a leaner link than `redis` (gateway/script_link.py).
        self.scripts = scripts if scripts is not None else redis
        self._lease_script = self.scripts.register_script((_HERE / "lease_key.lua").read_text())
        self._settle_script = self.scripts.register_script((_HERE / "settle_lease.lua").read_text())
        self.keeper = LeaseKeeper(redis, schema.leases, lease_ttl_sec)
        # Told when traffic retires a key (revoked / over_quota), so it can be rechecked later.
        self.on_retired: Callable[[str, str], Awaitable[None]] | None = None

    async def register_configured(self, keys: list[ConfiguredKey]) -> None:
        """Make the pool hold exactly the configured keys (plus any added at runtime).

        A key already known keeps its state and counters, so a restart or a
        second replica does not forget that a key was revoked.
        """
        now = _now_ms()
        by_provider: dict[str, set[str]] = {"openai": set(), "anthropic": set()}
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in keys:
                by_provider[key.provider].add(key.key_id)
                h = self.schema.key(key.key_id)
                pipe.hsetnx(h, "status", "active")
                pipe.hsetnx(h, "added_at", now)
                pipe.hsetnx(h, "families", "*")
                pipe.hset(
                    h,
                    mapping={
                        "provider": key.provider,
                        "secret": key.secret,
                        "organization": key.organization,
                        "source": "config",
                    },
                )
                pipe.sadd(self.schema.provider_keys(key.provider), key.key_id)
            await pipe.execute()
        # Keys that came from an older configuration and are no longer in it leave the pool.
        for provider, wanted in by_provider.items():
            for kid in await self._redis.smembers(self.schema.provider_keys(provider)):
                kid = kid.decode() if isinstance(kid, bytes) else kid
                source = await self._redis.hget(self.schema.key(kid), "source")
                if kid not in wanted and source in (b"config", "config", None):
                    await self._redis.srem(self.schema.provider_keys(provider), kid)
                    await self._redis.delete(self.schema.key(kid))

    async def lease_key(
        self, provider: str, family: str, *, ticket: str = ""
    ) -> KeyLease:
        """Lease the best key for the family, or raise NoKeyAvailable. One round trip.

        Without a ticket this is the fast path, which yields to anyone already
        queued for the family; with one, it claims the key only for the head.
        """
        nonce = secrets.token_hex(6)
        q = self.queue_schema
        result = await self._lease_script(
            keys=[self.schema.provider_keys(provider), self.schema.leases, *q.lease_keys(family)],
            args=[
                _now_ms(), family, self._lease_ttl_ms, nonce, self.schema.key_hash_prefix,
                ticket, self._key_concurrency, q.waiting_prefix, q.wake_channel,
            ],
        )
        if int(result[0]) != 1:
            reason = _text(result[1])
            n = int(result[2])
            if reason == "behind":
                raise NoKeyAvailable(reason, position=n)
            raise NoKeyAvailable(reason, max(n, 0) / 1000)
        lease = KeyLease(
            lease_id=_text(result[2]),
            key_id=_text(result[1]),
            provider=provider,
            secret=_text(result[3]),
            organization=_text(result[4]),
        )
        self.keeper.hold(lease.lease_id)
        return lease

    async def settle(
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
    ) -> str | None:
        """Give the lease back, record usage and what the attempt taught about the key. One round trip.

        `estimated`: the usage is poolgate's count, upstream's never arrived; counted in `estimated_prompts`.
        """
        self.keeper.drop(lease.lease_id)
        counted = usage is not None
        usage = usage or Usage()
        budget = budget or RateBudget()
        q = self.queue_schema
        status = await self._settle_script(
            keys=[
                self.schema.key(lease.key_id),
                self.schema.leases,
                self.schema.family_usage(family),
                self.schema.total_usage,
                self.schema.active_identities,
                q.queued_families,
                q.tickets,
            ],
            args=[
                lease.lease_id,
                outcome,
                _now_ms() + int(cooldown_sec * 1000),
                1 if counted else 0,
                usage.input_tokens,
                usage.output_tokens,
                reason[:200],
                identity if counted else "",
                _now_ms(),
                budget.requests_remaining,
                budget.requests_reset_ms,
                budget.tokens_remaining,
                budget.tokens_reset_ms,
                q.queue_prefix,
                q.wake_channel,
                budget.tier,
                1 if estimated else 0,
            ],
        )
        new_status = _text(status) if status else None
        if outcome in (OVER_QUOTA, REVOKED) and new_status == outcome and self.on_retired is not None:
            await self.on_retired(lease.key_id, outcome)
        return new_status

    async def describe_keys(self) -> list[dict[str, Any]]:
        """Every key's state for operators and tests; the secret appears only masked."""
        views = []
        for provider in ("openai", "anthropic"):
            for kid in sorted(_text(k) for k in await self._redis.smembers(self.schema.provider_keys(provider))):
                raw = await self._redis.hgetall(self.schema.key(kid))
                fields = {_text(k): _text(v) for k, v in raw.items()}
                if not fields:
                    continue
                views.append(
                    {
                        "id": kid,
                        "provider": provider,
                        "key": mask_secret(fields.get("secret", "")),
                        "organization": fields.get("organization") or None,
                        "status": fields.get("status", "active"),
                        "status_reason": fields.get("status_reason") or None,
                        "cooldown_until_ms": int(fields.get("cooldown_until") or 0),
                        "families": fields.get("families", "*").split(","),
                        "inflight": int(fields.get("inflight") or 0),
                        "last_used_ms": int(fields.get("last_used") or 0),
                        "prompts": int(fields.get("prompts") or 0),
                        "input_tokens": int(fields.get("input_tokens") or 0),
                        "output_tokens": int(fields.get("output_tokens") or 0),
                        "estimated_prompts": int(fields.get("estimated_prompts") or 0),
                        "paced_until_ms": _paced_until(fields),
                    }
                )
        return views

    async def active_identities(self, window_sec: float) -> int:
        """How many identities were served within the last `window_sec` seconds."""
        return int(await self._redis.zcount(self.schema.active_identities, _now_ms() - int(window_sec * 1000), "+inf"))

    async def usage_totals(self) -> dict[str, int]:
        raw = await self._redis.hgetall(self.schema.total_usage)
        totals = {_text(k): int(v) for k, v in raw.items()}
        return {name: totals.get(name, 0) for name in _USAGE_FIELDS}

    async def family_usage(self, family: str) -> dict[str, int]:
        raw = await self._redis.hgetall(self.schema.family_usage(family))
        totals = {_text(k): int(v) for k, v in raw.items()}
        return {name: totals.get(name, 0) for name in _USAGE_FIELDS}


# `estimated_prompts`: how many of the prompts were counted by poolgate, upstream's usage never having arrived.
_USAGE_FIELDS = ("prompts", "input_tokens", "output_tokens", "estimated_prompts")


def _paced_until(fields: dict[str, str]) -> int:
    """Until when (ms) the key's spent upstream budget holds it back, as `lease_key.lua` judges it; 0 if not."""
    now = _now_ms()
    inflight = int(fields.get("inflight") or 0)
    until = 0
    reset = int(float(fields.get("rl_requests_reset") or 0))
    if reset > now and int(float(fields.get("rl_requests_remaining") or 1)) - inflight <= 0:
        until = reset
    reset = int(float(fields.get("rl_tokens_reset") or 0))
    if reset > now and int(float(fields.get("rl_tokens_remaining") or 1)) <= 0:
        until = max(until, reset)
    return until


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
