"""Every Redis key the key pool writes, built in one place under one prefix.

    {prefix}keys:{provider}      SET   ids of the provider's keys
    {prefix}key:{id}             HASH  one key: provider, secret, organization, families, status,
                                       cooldown_until (ms), inflight, last_used (ms), source, added_at,
                                       filed (where candidates.lua filed it: "{provider}|{set},{set}"),
                                       limit (the concurrency learned from its 429s; absent: unknown),
                                       status_reason, prompts, input_tokens, output_tokens,
                                       estimated_prompts (of those prompts, counted by poolgate);
                                       from key checks: checked_at (ms), check_result, next_check_at (ms),
                                       recheck_attempt, recheck_pending, revived_at (ms), organizations, tier;
                                       parent (an organization's entry split off the key with that id)
    {prefix}ready:{provider}:{set}    ZSET  key id -> inflight * 1e13 + last_used: keys that may be leased now,
                                       serving every family (set "*") or the family named
    {prefix}resting:{provider}:{set}  ZSET  key id -> when it may serve again (ms): cooling down or paced
    {prefix}leases               ZSET  lease id ("{key id}:{nonce}") -> expiry time (ms)
    {prefix}usage:family:{name}  HASH  prompts, input_tokens, output_tokens, estimated_prompts of a model family
    {prefix}usage:total          HASH  the same over everything
    {prefix}active               ZSET  identity -> last time (ms) it was served; "people active now"
    {prefix}checking:{id}        STRING  held while a check of the key runs, so two at once do one probe

Every time (ms) stored here is the store's clock (`TIME` inside the scripts), never a gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolSchema:
    prefix: str = "poolgate:"

    def provider_keys(self, provider: str) -> str:
        return f"{self.prefix}keys:{provider}"

    @property
    def key_hash_prefix(self) -> str:
        return f"{self.prefix}key:"

    def key(self, key_id: str) -> str:
        return f"{self.prefix}key:{key_id}"

    def ready(self, provider: str, family_set: str) -> str:
        """Keys that may be leased now, filed by `candidates.lua` (family_set "*": every family)."""
        return f"{self.prefix}ready:{provider}:{family_set}"

    def resting(self, provider: str, family_set: str) -> str:
        return f"{self.prefix}resting:{provider}:{family_set}"

    def candidate_keys(self, provider: str, family: str) -> list[str]:
        """The candidate sets `lease_key.lua` reads for a family (its KEYS[8..11])."""
        return [self.ready(provider, "*"), self.ready(provider, family),
                self.resting(provider, "*"), self.resting(provider, family)]

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    def family_usage(self, family: str) -> str:
        return f"{self.prefix}usage:family:{family}"

    @property
    def total_usage(self) -> str:
        return f"{self.prefix}usage:total"

    @property
    def active_identities(self) -> str:
        return f"{self.prefix}active"

    def check_lock(self, key_id: str) -> str:
        return f"{self.prefix}checking:{key_id}"
