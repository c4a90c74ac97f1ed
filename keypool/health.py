"""Key health: run checks on pool keys, record what they found, and know which keys are due.

The same code runs inside an rq job (`keypool.jobs`) and in the gateway's own
event loop (embedded store); scheduling is the caller's business. What a check
decides is one Lua script (`record_check.lua`), and a check holds a short lock
per key, so checks are idempotent and two at once probe upstream only once.

When a check runs:
- every key at start-up and when added (the caller asks);
- when `next_check_at` has passed: the provider's interval after a good check,
  the backoff steps after traffic retired a key (`schedule_recheck.lua`) or a
  check found it still bad, the first step after an inconclusive check;
- keys never checked count as due, so a worker started later catches up.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from keypool.checks import UNKNOWN, KeyCheck, check_anthropic_key, check_openai_key
from keypool.inventory import ORGANIZATION_SOURCE, KeyInventory
from keypool.keys import key_id_for
from keypool.schema import PoolSchema
from keypool.scripts import script_source

log = logging.getLogger("poolgate.keypool.health")

_CONCURRENT_CHECKS = 8
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    """All a key check needs besides the store; plain and picklable, so an rq job can carry it. No secrets."""

    redis_prefix: str
    openai_base_url: str
    anthropic_base_url: str
    openai_interval_sec: float
    anthropic_interval_sec: float
    backoff_sec: tuple[float, ...]
    timeout_sec: float = 20.0

    def interval_ms(self, provider: str) -> int:
        seconds = self.openai_interval_sec if provider == "openai" else self.anthropic_interval_sec
        return int(seconds * 1000)

    @property
    def backoff_ms(self) -> str:
        return ",".join(str(int(step * 1000)) for step in self.backoff_sec)


class KeyHealth:
    def __init__(self, redis: Any, policy: CheckPolicy) -> None:
        self._redis = redis
        self.policy = policy
        self.schema = PoolSchema(policy.redis_prefix)
        self.inventory = KeyInventory(redis, self.schema)
        self._record = redis.register_script(script_source("record_check.lua"))
        self._schedule = redis.register_script(script_source("schedule_recheck.lua"))
        self._release = redis.register_script(_RELEASE_LOCK)

    async def check_keys(self, key_ids: list[str]) -> list[dict[str, Any]]:
        """Check the keys, a few at a time; one summary per key checked (none for keys gone or being checked)."""
        gate = asyncio.Semaphore(_CONCURRENT_CHECKS)

        async def one(kid: str) -> list[dict[str, Any]]:
            async with gate:
                return await self.check_key(kid)

        results = await asyncio.gather(*(one(kid) for kid in dict.fromkeys(key_ids)))
        return [summary for batch in results for summary in batch]

    async def check_key(self, key_id: str) -> list[dict[str, Any]]:
        """Check one key (and the entries split off it for other organizations); summaries without secrets."""
        lock = self.schema.check_lock(key_id)
        token = secrets.token_hex(8)
        hold_ms = int(self.policy.timeout_sec * 3 * 1000) + 5000
        if not await self._redis.set(lock, token, nx=True, px=hold_ms):
            return []  # another process is checking it right now; its result will be recorded
        try:
            fields = {_text(k): _text(v) for k, v in (await self._redis.hgetall(self.schema.key(key_id))).items()}
            if not fields.get("secret"):
                return []
            provider = fields.get("provider", "")
            found = await self._probe(provider, fields["secret"], fields.get("organization", ""))
            status, changed = await self._record_result(key_id, provider, fields.get("status", "active"), found)
            if status is None:
                return []  # removed while it was being checked
            self._log(key_id, status, changed, found)
            summaries = [{"id": key_id, "status": status, "result": found.detail}]
        finally:
            await self._release(keys=[lock], args=[token])
        if provider == "openai" and not fields.get("organization") and found.organizations:
            split = await self._split_organizations(key_id, fields["secret"], found.organizations)
            summaries.extend(await self.check_keys(split))
        return summaries

    async def schedule_recheck(self, key_id: str) -> float | None:
        """After traffic retired a key: when (unix time) it will be rechecked, or None if already scheduled."""
        window_ms = int(max(self.policy.backoff_sec, default=0) * 1000)
        when = await self._schedule(
            keys=[self.schema.key(key_id)], args=[self.policy.backoff_ms, window_ms]
        )
        if not when:
            return None
        log.info("key %s will be rechecked in %.0f s", key_id, (int(when) - await self._store_ms()) / 1000)
        return int(when) / 1000

    async def claim_due_keys(self) -> list[str]:
        """Ids of keys whose check is due, each claimed for a while so the next sweep does not take it again.

        Entries split off a key that has since left the pool leave with it.
        """
        now = await self._store_ms()
        claim_until = now + int(self.policy.timeout_sec * 3 * 1000) + 5000
        due = []
        for kid in await self.inventory.key_ids():
            raw = await self._redis.hmget(self.schema.key(kid), ["next_check_at", "status", "parent", "provider"])
            next_at, status, parent, provider = (_text(v) if v is not None else "" for v in raw)
            if parent and not await self.inventory.exists(parent):
                await self.inventory.forget(provider or "openai", kid)
                continue
            if status == "disabled" or not provider:
                continue
            if int(next_at or 0) <= now:
                await self._redis.hset(self.schema.key(kid), "next_check_at", claim_until)
                due.append(kid)
        return due

    async def seconds_until_next_due(self) -> float | None:
        """How long until the next key is due; None when no key is waiting for a check."""
        soonest = None
        for kid in await self.inventory.key_ids():
            raw = await self._redis.hmget(self.schema.key(kid), ["next_check_at", "status"])
            if raw[1] is None or _text(raw[1]) == "disabled":
                continue
            at = int(_text(raw[0])) if raw[0] is not None else 0
            soonest = at if soonest is None else min(soonest, at)
        return None if soonest is None else max(0.0, (soonest - await self._store_ms()) / 1000)

    async def _store_ms(self) -> int:
        """Now on the store's clock, the one every process compares `next_check_at` against."""
        sec, usec = await self._redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    async def _probe(self, provider: str, secret: str, organization: str) -> KeyCheck:
        timeout = self.policy.timeout_sec
        try:
            if provider == "openai":
                return await check_openai_key(self.policy.openai_base_url, secret, organization, timeout_sec=timeout)
            if provider == "anthropic":
                return await check_anthropic_key(self.policy.anthropic_base_url, secret, timeout_sec=timeout)
        except Exception as exc:  # a check must never take the scheduler down; the key stays as it was
            return KeyCheck(UNKNOWN, f"check failed ({type(exc).__name__})")
        return KeyCheck(UNKNOWN, f"unknown provider {provider!r}")

    async def _record_result(
        self, key_id: str, provider: str, status_before: str, found: KeyCheck
    ) -> tuple[str | None, bool]:
        result = await self._record(
            keys=[self.schema.key(key_id)],
            args=[
                status_before,
                found.verdict,
                ",".join(found.families),
                found.tier,
                ",".join(found.organizations),
                found.detail[:200],
                self.schema.prefix,
                self.policy.interval_ms(provider),
                self.policy.backoff_ms,
            ],
        )
        if not result:
            return None, False
        return _text(result[0]), bool(int(result[1]))

    async def _split_organizations(self, key_id: str, secret: str, organizations: tuple[str, ...]) -> list[str]:
        """One pool entry per extra organization (the key itself serves its default one); returns new entries' ids.

        Entries for organizations the key has left are removed.
        """
        wanted = {key_id_for("openai", secret, org): org for org in organizations[1:]}
        for kid in await self.inventory.split_entries_of(key_id):
            if kid not in wanted:
                await self.inventory.forget("openai", kid)
                log.info("key %s left an organization; its entry %s is removed", key_id, kid)
        created = []
        for kid, org in wanted.items():
            filed = await self.inventory.update(
                "openai", kid, new_only=True,
                set_fields={"provider": "openai", "secret": secret, "organization": org,
                            "source": ORGANIZATION_SOURCE, "parent": key_id, "status": "active", "families": "*"},
            )
            if not filed:
                continue
            created.append(kid)
        if created:
            log.info("key %s belongs to %d organizations: added entries %s", key_id, len(organizations),
                     ", ".join(created))
        return created

    @staticmethod
    def _log(key_id: str, status: str, changed: bool, found: KeyCheck) -> None:
        if changed and status == "active":
            log.warning("key %s revived by its check: %s", key_id, found.detail)
        elif changed:
            log.warning("key %s is now %s: %s", key_id, status, found.detail)
        else:
            log.info("key %s checked (%s): %s", key_id, status, found.detail)





def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
