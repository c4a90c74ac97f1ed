"""User records in the store: create, read, list, change, disable, enable, rotate a token, refresh quotas, delete.

Every process reads and writes the same records (`accounts/schema.py`), so a
user created or disabled through one gateway is known to all at once. Each
change that touches more than one key, or must not resurrect a user deleted
meanwhile, is one Lua script beside this module.

A token is made here, handed back once, and never stored: the store keeps its
sha256 (`token_hash`) and its last four characters (`token_hint`, so an admin
can tell tokens apart). Views built here never hold either the token or its hash.
"""

from __future__ import annotations

import json
import secrets
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounts.schema import AccountsSchema, token_hash

USER_TYPES = ("normal", "special", "temporary")
TOKEN_PREFIX = "pg-"
TOKEN_HINT_CHARS = 4
MAX_NICKNAME_CHARS = 80
MAX_NOTE_CHARS = 2000
MAX_REASON_CHARS = 500
MAX_EMAIL_CHARS = 254  # the longest address SMTP carries
SORTS = ("created_at", "last_used_at", "prompt_count", "nickname")
# A user hash's fields and its addresses with the time each was first seen (ms): a whole user as stored.
UserRecord = tuple[dict[str, str], list[tuple[str, int]]]

_HERE = Path(__file__).parent
_SCRIPTS = ("create_user", "update_user", "enable_user", "rotate_token", "delete_user", "refresh_quota")


class UserInputError(ValueError):
    """A field an admin sent is not acceptable; `field` names it (`quotas.gpt-4o`), the message says why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def new_token() -> str:
    """A user token: 256 random bits, URL-safe, recognisable by its prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_user_id() -> str:
    return secrets.token_hex(8)


def token_hint(token: str) -> str:
    return token[-TOKEN_HINT_CHARS:]


@dataclass
class UserChanges:
    """What a create or an update writes: checked fields, ready for the user hash."""

    set_fields: dict[str, str] = field(default_factory=dict)
    delete_fields: list[str] = field(default_factory=list)
    public: bool | None = None  # None: unchanged


def read_user_fields(body: Any, families: tuple[str, ...], *, creating: bool) -> UserChanges:
    """Check an admin's user body (create or PATCH) and turn it into hash fields; UserInputError names a bad field.

    On PATCH, `null` removes an optional field (nickname, note, max_ips back to the default,
    a refresh amount back to "refresh to 0"). Quotas are limits in tokens, 0 meaning unlimited.
    """
    if not isinstance(body, dict):
        raise UserInputError("body", "must be a JSON object")
    allowed = {"nickname", "type", "expires_at", "note", "max_ips", "public", "quotas", "refresh", "email"}
    for name in body:
        if name not in allowed:
            raise UserInputError(str(name)[:40], f"is not a user field (known: {', '.join(sorted(allowed))})")
    changes = UserChanges()
    for name, limit in (("nickname", MAX_NICKNAME_CHARS), ("note", MAX_NOTE_CHARS)):
        if name in body:
            value = body[name]
            if value is None and not creating:
                changes.delete_fields.append(name)
            else:
                changes.set_fields[name] = checked_text(name, value, limit)
    if "email" in body:  # budgets are looked up by it and by its @domain (accounts/budgets.py)
        if body["email"] is None and not creating:
            changes.delete_fields.append("email")
        else:
            changes.set_fields["email"] = checked_email(body["email"])
    if "type" in body:
        if body["type"] not in USER_TYPES:
            raise UserInputError("type", f"must be one of {', '.join(USER_TYPES)}")
        changes.set_fields["type"] = body["type"]
    elif creating:
        changes.set_fields["type"] = "normal"
    if "expires_at" in body:
        if body["expires_at"] is None and not creating:
            changes.set_fields["expires_at"] = "0"
        else:
            changes.set_fields["expires_at"] = str(checked_count("expires_at", body["expires_at"], positive=True))
    if changes.set_fields.get("type") == "temporary" and changes.set_fields.get("expires_at", "0") == "0" and creating:
        raise UserInputError("expires_at", "a temporary user needs expires_at (ms since the epoch)")
    if "max_ips" in body:
        if body["max_ips"] is None and not creating:
            changes.delete_fields.append("max_ips")
        else:
            changes.set_fields["max_ips"] = str(checked_count("max_ips", body["max_ips"]))
    if "public" in body:
        if not isinstance(body["public"], bool):
            raise UserInputError("public", "must be true or false")
        changes.public = body["public"]
    for family, amount in checked_family_map("quotas", body.get("quotas", {}), families, nullable=False).items():
        changes.set_fields[f"quota:{family}"] = str(amount)
    for family, amount in checked_family_map("refresh", body.get("refresh", {}), families, nullable=True).items():
        if amount is None:
            changes.delete_fields.append(f"refresh:{family}")
        else:
            changes.set_fields[f"refresh:{family}"] = str(amount)
    return changes


def checked_text(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise UserInputError(name, "must be a string")
    if len(value) > limit or any(not ch.isprintable() for ch in value):
        raise UserInputError(name, f"must be at most {limit} printable characters")
    return value


def checked_email(value: Any) -> str:
    """An email as budgets look it up: one `@` with text on each side, lower-cased (as Google sign-in writes it)."""
    email = checked_text("email", value, MAX_EMAIL_CHARS).strip().lower()
    local, at, domain = email.partition("@")
    if not local or not at or not domain or "@" in domain or any(c.isspace() for c in email):
        raise UserInputError("email", "must be an address like name@example.org")
    return email


def checked_count(name: str, value: Any, *, positive: bool = False) -> int:
    # bool is an int in Python and JSON's true is not a count.
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        raise UserInputError(name, "must be a whole number above 0" if positive else "must be a whole number >= 0")
    return value


def checked_family_map(
    name: str, value: Any, families: tuple[str, ...], *, nullable: bool
) -> dict[str, int | None]:
    if not isinstance(value, dict):
        raise UserInputError(name, "must be an object of model family -> tokens")
    checked: dict[str, int | None] = {}
    for family, amount in value.items():
        if family not in families:
            raise UserInputError(f"{name}.{str(family)[:40]}", f"is not a model family (known: {', '.join(families)})")
        checked[family] = None if amount is None and nullable else checked_count(f"{name}.{family}", amount)
    return checked


class UserBook:
    """The users of one store. Cheap to make; `for_store` shares the registered scripts."""

    _scripts_by_store: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

    def __init__(self, store: Any, schema: AccountsSchema, families: tuple[str, ...]) -> None:
        self.store = store
        self.schema = schema
        self.families = families
        scripts = self._scripts_by_store.get(store)
        if scripts is None:
            prelude = (_HERE / "store_time.lua").read_text()
            scripts = {
                name: store.register_script(prelude + "\n" + (_HERE / f"{name}.lua").read_text()) for name in _SCRIPTS
            }
            self._scripts_by_store[store] = scripts
        self._scripts = scripts

    async def create(self, changes: UserChanges, default_quotas: dict[str, int]) -> tuple[dict[str, Any], str]:
        """A new user with the default quotas under the given fields: (its view, its token — shown this once)."""
        fields = {f"quota:{family}": str(amount) for family, amount in default_quotas.items()}
        fields.update({"prompt_count": "0", "expires_at": "0"})
        fields.update(changes.set_fields)
        if changes.public:
            fields["public"] = "1"
        while True:  # an id or token that is taken already is drawn again (in practice never)
            user_id, token = new_user_id(), new_token()
            fields["token_hint"] = token_hint(token)
            created = await self._scripts["create_user"](
                keys=[self.schema.user(user_id), self.schema.users, self.schema.user_tokens, self.schema.public_users],
                args=[user_id, token_hash(token), "1" if changes.public else "0", *_flat(fields)],
            )
            if int(created):
                break
        view = await self.get(user_id)
        assert view is not None
        return view, token

    async def get(self, user_id: str) -> dict[str, Any] | None:
        views = await self._views([user_id])
        return views[0] if views else None

    async def find(
        self, *, type_: str | None = None, disabled: bool | None = None, nickname: str | None = None,
        sort: str = "created_at", descending: bool = False, page: int = 1, per_page: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the users that match, in the order asked for, and how many match in all."""
        ids = [_text(member) for member in await self.store.zrange(self.schema.users, 0, -1)]
        views = await self._views(ids)
        if type_ is not None:
            views = [v for v in views if v["type"] == type_]
        if disabled is not None:
            views = [v for v in views if (v["disabled_at"] is not None) == disabled]
        if nickname:
            wanted = nickname.casefold()
            views = [v for v in views if wanted in (v["nickname"] or "").casefold()]
        if sort == "nickname":
            views.sort(key=lambda v: ((v["nickname"] or "").casefold(), v["created_at"]), reverse=descending)
        else:
            views.sort(key=lambda v: (v[sort] or 0, v["created_at"]), reverse=descending)
        start = (page - 1) * per_page
        return views[start:start + per_page], len(views)

    async def update(self, user_id: str, changes: UserChanges) -> bool:
        """Apply checked changes; False when there is no such user. A temporary user must keep an expiry."""
        current = await self.get(user_id)
        if current is None:
            return False
        kind = changes.set_fields.get("type", current["type"])
        expires = int(changes.set_fields.get("expires_at", current["expires_at"] or 0))
        if kind == "temporary" and not expires:
            raise UserInputError("expires_at", "a temporary user needs expires_at (ms since the epoch)")
        return await self._update(user_id, changes)

    async def disable(self, user_id: str, reason: str) -> bool:
        return await self._update(user_id, UserChanges(set_fields={"disabled_reason": reason}), now_field="disabled_at")

    async def enable(self, user_id: str) -> bool:
        """Enable the user and lift the limiter's ban, block, strikes and windows on it."""
        identity = f"user:{user_id}"
        done = await self._scripts["enable_user"](
            keys=[self.schema.user(user_id), self.schema.bans, self.schema.limit_block(identity),
                  self.schema.limit_strikes(identity), self.schema.limit_minute(identity),
                  self.schema.limit_hour(identity), self.schema.limit_image(identity)],
            args=[identity],
        )
        return bool(int(done))

    async def rotate_token(self, user_id: str) -> str | None:
        """A new token for the user (shown this once); the old one stops working in the same step."""
        while True:
            token = new_token()
            done = await self._scripts["rotate_token"](
                keys=[self.schema.user(user_id), self.schema.user_tokens],
                args=[user_id, token_hash(token), token_hint(token)],
            )
            if int(done):
                return token
            if not await self.store.exists(self.schema.user(user_id)):
                return None

    async def refresh_quota(self, user_id: str) -> bool:
        return bool(int(await self._scripts["refresh_quota"](keys=[self.schema.user(user_id)], args=[])))

    async def refresh_all_quotas(self) -> int:
        """Refresh every user's quotas; how many users were refreshed."""
        ids = [_text(member) for member in await self.store.zrange(self.schema.users, 0, -1)]
        refreshed = 0
        for user_id in ids:  # one short script per user: a big user list never holds the store for long
            refreshed += await self.refresh_quota(user_id)
        return refreshed

    async def delete(self, user_id: str) -> bool:
        identity = f"user:{user_id}"
        s = self.schema
        done = await self._scripts["delete_user"](
            keys=[s.user(user_id), s.user_ips(user_id), s.users, s.user_tokens, s.public_users, s.bans,
                  s.limit_minute(identity), s.limit_hour(identity), s.limit_block(identity), s.limit_strikes(identity),
                  s.limit_image(identity)],
            args=[user_id, identity],
        )
        return bool(int(done))

    async def public_summary(self) -> dict[str, Any]:
        """What the status page may show: how many users, and nickname + prompt count of each public one."""
        total = await self.store.zcard(self.schema.users)
        ids = sorted(_text(member) for member in await self.store.smembers(self.schema.public_users))
        async with self.store.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.hmget(self.schema.user(user_id), "nickname", "prompt_count")
            rows = await pipe.execute() if ids else []
        public = sorted(
            ((_text(nick), int(count or 0)) for nick, count in rows if nick is not None),
            key=lambda row: row[0].casefold(),
        )
        return {"total": int(total), "public": [{"nickname": nick, "prompt_count": n} for nick, n in public]}

    async def raw_records(self, user_ids: list[str] | None = None) -> list[UserRecord]:
        """(user hash, [(address, first seen ms)]) per user, oldest first: what an export is made of."""
        if user_ids is None:
            user_ids = [_text(member) for member in await self.store.zrange(self.schema.users, 0, -1)]
        if not user_ids:
            return []
        async with self.store.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hgetall(self.schema.user(user_id))
                pipe.zrange(self.schema.user_ips(user_id), 0, -1, withscores=True)
            replies = await pipe.execute()
        records = []
        for raw, ips in zip(replies[::2], replies[1::2], strict=True):
            if raw:
                fields = {_text(k): _text(v) for k, v in raw.items()}
                records.append((fields, [(_text(address), int(seen)) for address, seen in ips]))
        return records

    async def owners_of(self, hashes: list[str]) -> list[str | None]:
        """The user id each token hash belongs to, if any."""
        if not hashes:
            return []
        owners = await self.store.hmget(self.schema.user_tokens, hashes)
        return [None if owner is None else _text(owner) for owner in owners]

    async def replace(self, records: list[UserRecord]) -> int:
        """Write whole user records (an import), each replacing any user of its id, in one transaction; how many
        replaced a user.

        The caller has checked every record first, so either all are written or, if the store
        fails, none of the transaction is applied.
        """
        s = self.schema
        ids = [fields["id"] for fields, _ in records]
        async with self.store.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.hget(s.user(user_id), "token_hash")
            old_hashes = await pipe.execute()
        async with self.store.pipeline(transaction=True) as tx:
            for (fields, ips), old in zip(records, old_hashes, strict=True):
                user_id = fields["id"]
                if old is not None and _text(old) != fields["token_hash"]:
                    tx.hdel(s.user_tokens, _text(old))
                tx.delete(s.user(user_id), s.user_ips(user_id))
                tx.hset(s.user(user_id), mapping=fields)
                tx.zadd(s.users, {user_id: int(fields.get("created_at", "0"))})
                tx.hset(s.user_tokens, fields["token_hash"], user_id)
                if fields.get("login"):  # who signs in as this user (accounts/signin_users.py)
                    tx.hset(s.signin_logins, fields["login"], user_id)
                if ips:
                    tx.zadd(s.user_ips(user_id), {address: seen for address, seen in ips})
                if fields.get("public") == "1":
                    tx.sadd(s.public_users, user_id)
                else:
                    tx.srem(s.public_users, user_id)
            await tx.execute()
        return sum(old is not None for old in old_hashes)

    async def _update(self, user_id: str, changes: UserChanges, now_field: str = "") -> bool:
        public = "" if changes.public is None else "1" if changes.public else "0"
        done = await self._scripts["update_user"](
            keys=[self.schema.user(user_id), self.schema.public_users],
            args=[user_id, public, now_field, len(changes.delete_fields), *changes.delete_fields,
                  *_flat(changes.set_fields)],
        )
        return bool(int(done))

    async def _views(self, user_ids: list[str]) -> list[dict[str, Any]]:
        return [user_view(fields, ips, self.families) for fields, ips in await self.raw_records(user_ids)]


def user_view(fields: dict[str, str], ips: list[tuple[str, int]], families: tuple[str, ...]) -> dict[str, Any]:
    """A user as the admin API shows it: everything but the token and its hash."""
    quotas: dict[str, dict[str, int | None]] = {}
    for family in [*families, *_other_families(fields, families)]:
        if not any(f"{part}:{family}" in fields for part in ("quota", "refresh", "used", "input", "output")):
            continue
        refresh = fields.get(f"refresh:{family}")
        quotas[family] = {
            "limit": int(fields.get(f"quota:{family}", 0)),
            "used": int(fields.get(f"used:{family}", 0)),
            "refresh": None if refresh is None else int(refresh),
            "input": int(fields.get(f"input:{family}", 0)),
            "output": int(fields.get(f"output:{family}", 0)),
        }
    return {
        "id": fields["id"],
        "nickname": fields.get("nickname"),
        "type": fields.get("type", "normal"),
        "token_hint": "..." + fields.get("token_hint", ""),
        "created_at": int(fields.get("created_at", 0)),
        "last_used_at": int(fields.get("last_used_at", 0)) or None,
        "expires_at": int(fields.get("expires_at", 0)) or None,
        "prompt_count": int(fields.get("prompt_count", 0)),
        "disabled_at": int(fields["disabled_at"]) if "disabled_at" in fields else None,
        "disabled_reason": fields.get("disabled_reason"),
        "note": fields.get("note"),
        "max_ips": int(fields["max_ips"]) if "max_ips" in fields else None,
        "public": fields.get("public") == "1",
        "ips": [{"address": address, "first_seen_at": seen} for address, seen in ips],
        "quotas": quotas,
        "meta": json.loads(fields["meta"]) if "meta" in fields else None,
        # sign-in (accounts/signin_users.py): how this person signs in, so a restore keeps them this user
        "email": fields.get("email"),
        "signin": fields.get("signin"),
        "login": fields.get("login"),
        "session_gen": int(fields.get("session_gen", 0)),
    }


def _other_families(fields: dict[str, str], families: tuple[str, ...]) -> list[str]:
    # A family the catalog has dropped since the user was written: still shown, so nothing is hidden.
    seen = {name.partition(":")[2] for name in fields if name.startswith(("quota:", "used:"))}
    return sorted(seen - set(families))


def _flat(fields: dict[str, str]) -> list[str]:
    return [part for pair in fields.items() for part in pair]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
