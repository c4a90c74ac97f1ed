"""Which keys the pool holds, changed at runtime: add, remove, disable, enable — and the operator's view.

Everything is in the shared store, so every gateway process sees a change the
moment it is made; nothing is cached in a process. The view shows a key only
masked (`sk-...abcd`) and scrubs the secret from any text stored with it.
"""

from __future__ import annotations

import time
from typing import Any

from keypool.keys import PROVIDERS, ConfiguredKey, mask_secret
from keypool.schema import PoolSchema

ADMIN_SOURCE = "admin"  # keys added through the admin API; `register_configured` leaves them alone
ORGANIZATION_SOURCE = "organization"  # entries split off a key that belongs to several organizations


class KeyInventory:
    def __init__(self, redis: Any, schema: PoolSchema) -> None:
        self._redis = redis
        self.schema = schema

    async def key_ids(self, provider: str | None = None) -> list[str]:
        ids: list[str] = []
        for name in (provider,) if provider else PROVIDERS:
            ids.extend(sorted(_text(k) for k in await self._redis.smembers(self.schema.provider_keys(name))))
        return ids

    async def exists(self, key_id: str) -> bool:
        return bool(await self._redis.exists(self.schema.key(key_id)))

    async def describe(self, key_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The operator's view of the given keys (default: all), secrets masked."""
        views = []
        for kid in await self.key_ids() if key_ids is None else key_ids:
            fields = {_text(k): _text(v) for k, v in (await self._redis.hgetall(self.schema.key(kid))).items()}
            if fields:
                views.append(_view(kid, fields))
        return views

    async def add(self, keys: list[ConfiguredKey]) -> tuple[list[str], list[str]]:
        """Add keys as `source=admin`; returns (ids added, ids already in the pool, which are left as they are)."""
        added, present = [], []
        now = _now_ms()
        for key in keys:
            h = self.schema.key(key.key_id)
            # HSETNX on `secret` decides, atomically, whether this call is the one that adds the key.
            if not await self._redis.hsetnx(h, "secret", key.secret):
                present.append(key.key_id)
                continue
            await self._redis.hset(
                h,
                mapping={
                    "provider": key.provider,
                    "organization": key.organization,
                    "source": ADMIN_SOURCE,
                    "status": "active",
                    "families": "*",
                    "added_at": now,
                },
            )
            await self._redis.sadd(self.schema.provider_keys(key.provider), key.key_id)
            added.append(key.key_id)
        return added, present

    async def remove(self, key_id: str) -> list[str] | None:
        """Remove a key and the entries split off it for its other organizations; None when unknown."""
        provider = await self._redis.hget(self.schema.key(key_id), "provider")
        if provider is None:
            return None
        provider = _text(provider)
        removed = [key_id, *await self.split_entries_of(key_id, provider)]
        for kid in removed:
            await self.forget(provider, kid)
        return removed

    async def forget(self, provider: str, key_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.srem(self.schema.provider_keys(provider), key_id)
            pipe.delete(self.schema.key(key_id))
            await pipe.execute()

    async def split_entries_of(self, key_id: str, provider: str = "openai") -> list[str]:
        """Ids of the entries split off `key_id` for its other organizations."""
        found = []
        for kid in await self.key_ids(provider):
            if kid != key_id and _text(await self._redis.hget(self.schema.key(kid), "parent") or b"") == key_id:
                found.append(kid)
        return found

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        """Disable (traffic never changes it back) or enable (active, backoff forgotten); False when unknown."""
        h = self.schema.key(key_id)
        if not await self._redis.exists(h):
            return False
        if disabled:
            await self._redis.hset(h, mapping={"status": "disabled", "status_reason": "disabled by an operator"})
        else:
            await self._redis.hset(
                h,
                mapping={"status": "active", "status_reason": "", "cooldown_until": 0,
                         "recheck_attempt": 0, "recheck_pending": 0},
            )
        return True


def _view(kid: str, fields: dict[str, str]) -> dict[str, Any]:
    secret = fields.get("secret", "")

    def scrubbed(name: str) -> str | None:
        text = fields.get(name) or None
        return text.replace(secret, mask_secret(secret)) if text and secret else text

    checked_at = int(fields.get("checked_at") or 0)
    return {
        "id": kid,
        "provider": fields.get("provider"),
        "key": mask_secret(secret),
        "organization": fields.get("organization") or None,
        "source": fields.get("source") or None,
        "split_from": fields.get("parent") or None,
        "status": fields.get("status", "active"),
        "status_reason": scrubbed("status_reason"),
        "cooldown_until_ms": int(fields.get("cooldown_until") or 0),
        "families": fields.get("families", "*").split(","),
        "organizations": [o for o in (fields.get("organizations") or "").split(",") if o],
        "tier": fields.get("tier") or None,
        "inflight": int(fields.get("inflight") or 0),
        "added_at_ms": int(fields.get("added_at") or 0),
        "last_used_ms": int(fields.get("last_used") or 0),
        "usage": {name: int(fields.get(name) or 0)
                  for name in ("prompts", "input_tokens", "output_tokens", "estimated_prompts")},
        "last_check": {"at_ms": checked_at, "result": scrubbed("check_result")} if checked_at else None,
        "next_check_at_ms": int(fields.get("next_check_at") or 0) or None,
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
