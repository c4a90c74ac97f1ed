"""Users for tests, written straight into the store as `accounts/schema.py` lays them out.

One helper for every test that needs a user and does not test making one: the admin API
(`POST /admin/users`, tested in test_users_admin.py) chooses the id and fills only the fields it
knows, where these tests need a chosen id (BUDGETS names users by id) or any field (`type`,
`quota:<family>`, ...): a hash, and the token's hash in the index, as the admin API stores them.
"""

from __future__ import annotations

from typing import Any

from accounts.schema import AccountsSchema, token_hash
from accounts.users import new_token, new_user_id, token_hint


def make_user(gateway: Any, *, user_id: str = "", **fields: Any) -> tuple[str, str]:
    """A new user with `fields` (e.g. `type="special"`, `**{"quota:gpt-4o-mini": 500}`), and the id `user_id`
    when one is given: (user id, token)."""
    user_id = user_id or new_user_id()  # drawn as the admin API draws them, so its routes find the user
    token = new_token()
    schema = AccountsSchema(gateway.app.settings.redis_prefix)
    record = {"id": user_id, "token_hash": token_hash(token), "nickname": f"n{user_id}", "type": "normal",
              "created_at": 1, "prompt_count": 0, "token_hint": token_hint(token), **fields}

    async def write() -> None:
        store = gateway.app.store
        await store.hset(schema.user(user_id), mapping={k: str(v) for k, v in record.items()})
        await store.hset(schema.user_tokens, token_hash(token), user_id)
        await store.zadd(schema.users, {user_id: 1})

    gateway.run(write())
    return user_id, token


def user_record(gateway: Any, user_id: str) -> dict[str, str]:
    schema = AccountsSchema(gateway.app.settings.redis_prefix)
    raw = gateway.run(gateway.app.store.hgetall(schema.user(user_id)))
    return {_text(k): _text(v) for k, v in raw.items()}


def user_addresses(gateway: Any, user_id: str) -> list[str]:
    schema = AccountsSchema(gateway.app.settings.redis_prefix)
    return [_text(a) for a in gateway.run(gateway.app.store.zrange(schema.user_ips(user_id), 0, -1))]


def update_user(gateway: Any, user_id: str, **fields: Any) -> None:
    schema = AccountsSchema(gateway.app.settings.redis_prefix)
    gateway.run(gateway.app.store.hset(schema.user(user_id), mapping={k: str(v) for k, v in fields.items()}))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
