"""Helpers for the users tests: the users admin API as an admin calls it, and the store as an operator reads it.

Usage counters (`used:{family}`) and limiter penalties are written by admission and
settlement; where a test needs some, it writes them into the store the way
`accounts/schema.py` lays them out, as that traffic would have.
"""

from __future__ import annotations

from typing import Any

import httpx
from checks_support import ADMIN_KEY, admin

from accounts.schema import AccountsSchema


def start_with_admin(start_gateway: Any, **env: str) -> Any:
    return start_gateway(**{"OPENAI_KEY": "sk-users-test-0001", "ADMIN_KEY": ADMIN_KEY, **env})


def create_user(gateway: Any, **fields: Any) -> tuple[dict[str, Any], str]:
    """POST /admin/users: (the user as shown, its one-time token)."""
    reply = admin(gateway, "POST", "/users", json=fields)
    assert reply.status_code == 201, reply.text
    body = reply.json()
    return body["user"], body["token"]


def get_user(gateway: Any, user_id: str) -> httpx.Response:
    return admin(gateway, "GET", f"/users/{user_id}")


def schema_of(gateway: Any) -> AccountsSchema:
    return AccountsSchema(gateway.app.settings.redis_prefix)


def token_owner(gateway: Any, hashed: str) -> str | None:
    """The user id the store's token index gives for a token hash (what authentication will look up)."""
    owner = gateway.run(gateway.app.store.hget(schema_of(gateway).user_tokens, hashed))
    return None if owner is None else _text(owner)


def store_fields(gateway: Any, key: str) -> dict[str, str]:
    raw = gateway.run(gateway.app.store.hgetall(key))
    return {_text(k): _text(v) for k, v in raw.items()}


def set_fields(gateway: Any, key: str, **fields: Any) -> None:
    gateway.run(gateway.app.store.hset(key, mapping={k: str(v) for k, v in fields.items()}))


def key_exists(gateway: Any, key: str) -> bool:
    return bool(gateway.run(gateway.app.store.exists(key)))


def everything_stored(gateway: Any) -> str:
    """Every key and value under the gateway's prefix, as text: to show a secret is nowhere in the store."""

    async def dump() -> str:
        store = gateway.app.store
        parts = []
        async for key in store.scan_iter(match=gateway.app.settings.redis_prefix + "*"):
            kind = _text(await store.type(key))
            value: Any = {
                "hash": store.hgetall, "string": store.get, "zset": lambda k: store.zrange(k, 0, -1),
                "set": store.smembers, "list": lambda k: store.lrange(k, 0, -1),
            }.get(kind, store.type)(key)
            parts.append(f"{_text(key)} {await value!r}")
        return "\n".join(parts)

    return str(gateway.run(dump()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
