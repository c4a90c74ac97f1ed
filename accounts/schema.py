"""Every Redis key the accounts ledger writes, built in one place under the shared prefix.

    {prefix}user:{id}              HASH  one user (fields below)
    {prefix}user:{id}:ips          ZSET  address -> first seen (ms): the addresses that have used the token
    {prefix}users                  ZSET  user id -> created_at (ms): every user, oldest first
    {prefix}user_tokens            HASH  sha256 hex of a token -> user id: the only way from a token to a user
    {prefix}public_users           SET   ids of the users with public=1: what the status page lists
    {prefix}limit:{identity}:min   ZSET  request id -> time (ms): requests in the last minute
    {prefix}limit:{identity}:hour  ZSET  request id -> time (ms): requests in the last hour
    {prefix}limit:{identity}:image ZSET request id -> time (ms): image generations in the last minute
    {prefix}limit:{identity}:block STR   set while the identity is blocked, expiring when the block ends (PX)
    {prefix}limit:{identity}:strikes STR blocked requests so far; at the ban threshold the identity is banned
    {prefix}bans                   HASH  identity -> "{ms}|{reason}": banned until an admin lifts it
    {prefix}signin_logins          HASH  "{method}:{subject}" -> user id: who signed in with Apple or Google
                                         (subject: appAccountToken / original transaction id, or the email)
    {prefix}signin_limit:{address} ZSET  attempt id -> time (ms): sign-in attempts from an address in the last minute
    --- money (issue 13; micro-dollars, integers) ---
    {prefix}budgets                HASH  "user:{id}" | email | "@{domain}" | "*" -> monthly budget (0: none)
    {prefix}user:{id}:holds        ZSET  "{request}|{micro-dollars}" -> expiry (ms): cost reserved by requests in flight
    {prefix}usage_events           STREAM one entry per settled request, moved to the usage database (group "movers")

A user hash holds:
    id, token_hash (sha256 hex; the token itself is never stored), token_hint (its last 4 characters), nickname,
    type (normal | special | temporary),
    created_at, last_used_at (ms), expires_at (ms, temporary users; 0: never), prompt_count,
    disabled_at (ms; absent: enabled), disabled_reason, note, max_ips (0: no limit; absent: the default),
    public ("1": nickname and prompt count may appear on the status page),
    quota:{family} (token limit, 0: unlimited), refresh:{family} (amount a refresh restores; absent: to the limit),
    used:{family} (tokens counted against the quota, reservations included),
    input:{family}, output:{family} (tokens upstream reported, for the usage report),
    meta (JSON object: what an import carried that poolgate does not use, kept for the next export),
    session_gen (sessions made before this generation are revoked; absent: 0), signin (app_store | google: how
    a user made by signing in signed in), email (Google sign-in).
    meta (JSON object: what an import carried that poolgate does not use, kept for the next export).
    cost:{YYYY-MM}, requests:{YYYY-MM} (the budget month's spend in micro-dollars and requests settled),
    email (optional: its budget is looked up by it and by its @domain).

An identity is "user:{id}" for a user, "ip:{address}" for an anonymous caller. The limiter counts all
anonymous callers in one bucket, "anon"; their strikes and bans fall on the address ("ip:{address}").
Every time (ms) stored here is the store's clock (`TIME` inside the scripts), never a gateway's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def token_hash(token: str) -> str:
    """What the store keeps instead of a token: a copy of the store gives no working token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AccountsSchema:
    prefix: str = "poolgate:"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def user_ips(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:ips"

    @property
    def users(self) -> str:
        return f"{self.prefix}users"

    @property
    def user_tokens(self) -> str:
        return f"{self.prefix}user_tokens"

    @property
    def public_users(self) -> str:
        return f"{self.prefix}public_users"

    def limit_minute(self, identity: str) -> str:
        return f"{self.prefix}limit:{identity}:min"

    def limit_hour(self, identity: str) -> str:
        return f"{self.prefix}limit:{identity}:hour"

    def limit_image(self, identity: str) -> str:
        return f"{self.prefix}limit:{identity}:image"

    def limit_block(self, identity: str) -> str:
        return f"{self.prefix}limit:{identity}:block"

    def limit_strikes(self, identity: str) -> str:
        return f"{self.prefix}limit:{identity}:strikes"

    @property
    def bans(self) -> str:
        return f"{self.prefix}bans"

    # --- signin (accounts/sessions.py, accounts/signin_users.py) ---
    @property
    def signin_logins(self) -> str:
        return f"{self.prefix}signin_logins"

    def signin_limit(self, address: str) -> str:
        return f"{self.prefix}signin_limit:{address}"
    # --- money (issue 13) ---
    @property
    def budgets(self) -> str:
        return f"{self.prefix}budgets"

    def user_holds(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}:holds"

    @property
    def usage_events(self) -> str:
        return f"{self.prefix}usage_events"
