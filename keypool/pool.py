"""The key pool: which keys exist, their state, and what a lease on one and its reply look like.

Every change of a key's state is one Lua script that files the key as a lease
candidate (`candidates.lua`), so any number of gateway processes sharing one
Redis act as one pool. Leasing and settling, where a key meets a waiting
request, are the dispatch room's (`dispatch/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keypool.inventory import KeyInventory
from keypool.keys import ConfiguredKey, mask_secret
from keypool.schema import PoolSchema

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
    leased_at_ms: int = 0  # the store's clock when it was leased


@dataclass(frozen=True, slots=True)
class RateBudget:
    """A key's upstream rate-limit budget as a reply reported it; -1 where it said nothing.

    `*_reset_in_ms` is how long until the budget is whole again (a duration: the
    store adds it to its own clock), so a spent key is not offered to anyone before then.
    """

    requests_remaining: int = -1
    requests_reset_in_ms: int = -1
    tokens_remaining: int = -1
    tokens_reset_in_ms: int = -1
    tier: str = ""  # the usage tier the limits suggest (Anthropic), "" when unknown


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0  # all of the prompt, cache reads and writes included
    output_tokens: int = 0
    cache_read_tokens: int = 0  # of input_tokens: read from upstream's prompt cache (priced as such)
    cache_write_tokens: int = 0  # of input_tokens: written to it


class KeyPool:
    def __init__(self, redis: Any, schema: PoolSchema) -> None:
        self._redis = redis
        self.store = redis
        self.schema = schema
        self.inventory = KeyInventory(redis, schema)

    async def register_configured(self, keys: list[ConfiguredKey]) -> None:
        """Make the pool hold exactly the configured keys (plus any added at runtime).

        A key already known keeps its state and counters, so a restart or a
        second replica does not forget that a key was revoked.
        """
        by_provider: dict[str, set[str]] = {"openai": set(), "anthropic": set()}
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                by_provider[key.provider].add(key.key_id)
                await self.inventory.update(
                    key.provider, key.key_id, pipe=pipe,
                    set_if_missing={"status": "active", "families": "*"},
                    set_fields={"provider": key.provider, "secret": key.secret,
                                "organization": key.organization, "source": "config"},
                )
            await pipe.execute()
        # Keys that came from an older configuration and are no longer in it leave the pool.
        for provider, wanted in by_provider.items():
            known = sorted(_text(k) for k in await self._redis.smembers(self.schema.provider_keys(provider)))
            async with self._redis.pipeline(transaction=False) as pipe:
                for kid in known:
                    pipe.hget(self.schema.key(kid), "source")
                sources = await pipe.execute()
            for kid, source in zip(known, sources, strict=True):
                if kid not in wanted and source in (b"config", "config", None):
                    await self.inventory.update(provider, kid, forget=True)

    async def describe_keys(self) -> list[dict[str, Any]]:
        """Every key's state for operators and tests; the secret appears only masked."""
        ids = [(provider, kid) for provider in ("openai", "anthropic")
               for kid in sorted(_text(k) for k in await self._redis.smembers(self.schema.provider_keys(provider)))]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for _, kid in ids:
                pipe.hgetall(self.schema.key(kid))
            replies = await pipe.execute()
        now = _store_ms(replies[0])
        views = []
        for (provider, kid), raw in zip(ids, replies[1:], strict=True):
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
                    "paced_until_ms": _paced_until(fields, now),
                }
            )
        return views

    async def store_ms(self) -> int:
        """Now on the store's clock: what every stored time (ms) is to be compared with."""
        return _store_ms(await self._redis.time())

    async def active_identities(self, window_sec: float) -> int:
        """How many identities were served within the last `window_sec` seconds."""
        since = await self.store_ms() - int(window_sec * 1000)
        return int(await self._redis.zcount(self.schema.active_identities, since, "+inf"))

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


def _store_ms(reply: Any) -> int:
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


def _paced_until(fields: dict[str, str], now: int) -> int:
    """Until when (ms) the key's spent upstream budget holds it back, as `candidates.lua` judges it; 0 if not."""
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
