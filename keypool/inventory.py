"""Which keys the pool holds, changed at runtime: add, remove, disable, enable — and the operator's view.

Everything is in the shared store, so every gateway process sees a change the
moment it is made; nothing is cached in a process. The view shows a key only
masked (`sk-...abcd`) and scrubs the secret from any text stored with it.
"""

from __future__ import annotations

import json
from typing import Any

from keypool.keys import PROVIDERS, ConfiguredKey, mask_secret
from keypool.schema import PoolSchema
from keypool.scripts import script_source

ADMIN_SOURCE = "admin"  # keys added through the admin API; `register_configured` leaves them alone
ORGANIZATION_SOURCE = "organization"  # entries split off a key that belongs to several organizations


class KeyInventory:
    def __init__(self, redis: Any, schema: PoolSchema) -> None:
        self._redis = redis
        self.schema = schema
        self._update_script = redis.register_script(script_source("update_key.lua"))

    async def update(
        self, provider: str, key_id: str, *, set_fields: dict[str, Any] | None = None,
        set_if_missing: dict[str, Any] | None = None, new_only: bool = False, forget: bool = False,
        pipe: Any = None,
    ) -> Any:
        """Change a key's record and re-file it as a lease candidate, atomically (`update_key.lua`).

        Every change of a key outside traffic comes through here, so the candidate
        sets a lease reads stay true. With `pipe`, the call is queued on that pipeline (and returns it).
        """
        args = {
            "prefix": self.schema.prefix, "id": key_id, "new_only": new_only, "forget": forget,
            "set": set_fields or {}, "set_if_missing": set_if_missing or {},
        }
        return await self._update_script(
            keys=[self.schema.key(key_id), self.schema.provider_keys(provider)],
            args=[json.dumps(args, separators=(",", ":"))],
            client=pipe,
        )

    async def key_ids(self, provider: str | None = None) -> list[str]:
        ids: list[str] = []
        for name in (provider,) if provider else PROVIDERS:
            ids.extend(sorted(_text(k) for k in await self._redis.smembers(self.schema.provider_keys(name))))
        return ids

    async def exists(self, key_id: str) -> bool:
        return bool(await self._redis.exists(self.schema.key(key_id)))

    async def describe(self, key_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The operator's view of the given keys (default: all), secrets masked."""
        ids = await self.key_ids() if key_ids is None else key_ids
        async with self._redis.pipeline(transaction=False) as pipe:  # one round trip, however many keys
            for kid in ids:
                pipe.hgetall(self.schema.key(kid))
            replies = await pipe.execute()
        views = []
        for kid, raw in zip(ids, replies, strict=True):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            if fields:
                views.append(_view(kid, fields))
        return views

    async def add(self, keys: list[ConfiguredKey]) -> tuple[list[str], list[str]]:
        """Add keys as `source=admin`; returns (ids added, ids already in the pool, which are left as they are)."""
        added: list[str] = []
        present: list[str] = []
        for key in keys:
            # The script decides, atomically, whether this call is the one that adds the key.
            filed = await self.update(
                key.provider, key.key_id, new_only=True,
                set_fields={"provider": key.provider, "secret": key.secret, "organization": key.organization,
                            "source": ADMIN_SOURCE, "status": "active", "families": "*"},
            )
            (added if filed else present).append(key.key_id)
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
        await self.update(provider, key_id, forget=True)

    async def split_entries_of(self, key_id: str, provider: str = "openai") -> list[str]:
        """Ids of the entries split off `key_id` for its other organizations."""
        found = []
        for kid in await self.key_ids(provider):
            if kid != key_id and _text(await self._redis.hget(self.schema.key(kid), "parent") or b"") == key_id:
                found.append(kid)
        return found

    async def set_disabled(self, key_id: str, disabled: bool) -> bool:
        """Disable (traffic never changes it back) or enable (active, backoff forgotten); False when unknown."""
        provider = await self._redis.hget(self.schema.key(key_id), "provider")
        if provider is None:
            return False
        if disabled:
            changes: dict[str, Any] = {"status": "disabled", "status_reason": "disabled by an operator"}
        else:
            changes = {"status": "active", "status_reason": "", "cooldown_until": 0,
                       "recheck_attempt": 0, "recheck_pending": 0}
        await self.update(_text(provider), key_id, set_fields=changes)
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
