"""The store's side of signing in: which user a purchase or a Google account is, and how often an address may try.

A person who signs in is a user record like any other (`accounts/users.py`): quotas, the rate limiter and
bans apply to it. It is found by its login, "{method}:{subject}" (`app_store:` + appAccountToken or original
transaction id, `google:` + email), so limits and quotas follow the person across renewals and devices;
the first sign-in creates it with the default quotas. Sign-in endpoints are unauthenticated and do crypto
work, so each address gets `SIGNIN_PER_MINUTE` attempts, counted in the store by `signin_limit.lua`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accounts.schema import AccountsSchema, token_hash
from accounts.users import new_token, new_user_id, token_hint

_HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class SignedInUser:
    user_id: str
    generation: int  # its session generation now: a session made now carries it
    created: bool


class SignInUsers:
    def __init__(self, store: Any, schema: AccountsSchema) -> None:
        self._schema = schema
        prelude = (_HERE / "store_time.lua").read_text()
        self._find_or_create = store.register_script(prelude + "\n" + (_HERE / "signin_user.lua").read_text())
        self._limit = store.register_script((_HERE / "signin_limit.lua").read_text())

    async def find_or_create(
        self, method: str, subject: str, *, nickname: str, default_quotas: dict[str, int], email: str = "",
    ) -> SignedInUser:
        """The user of this login, created now (default quotas, a token nobody is shown) if there is none."""
        fields = {f"quota:{family}": str(amount) for family, amount in default_quotas.items()}
        fields.update({"prompt_count": "0", "expires_at": "0", "type": "normal", "nickname": nickname[:80],
                       "signin": method, "login": f"{method}:{subject}",
                       "note": f"signed in with {method.replace('_', ' ')}"})
        if email:
            fields["email"] = email
        s = self._schema
        while True:  # an id or token that is taken already is drawn again (in practice never)
            token = new_token()
            fields["token_hint"] = token_hint(token)
            user_id, generation, created = await self._find_or_create(
                keys=[s.signin_logins, s.users, s.user_tokens],
                args=[f"{method}:{subject}", s.prefix, new_user_id(), token_hash(token),
                      *(v for pair in fields.items() for v in pair)],
            )
            user_id = user_id.decode() if isinstance(user_id, bytes) else str(user_id)
            if user_id:
                return SignedInUser(user_id, int(generation), bool(int(created)))

    async def retry_after_ms(self, address: str, per_minute: int) -> int:
        """Count an attempt from `address`: 0 when it may go on, else how long (ms) until it may try again."""
        if per_minute <= 0:
            return 0
        wait = await self._limit(keys=[self._schema.signin_limit(address)], args=[per_minute, secrets.token_hex(8)])
        return int(wait)


class SignInRefused(Exception):
    """A sign-in that does not get a session: `status` (400, 401, 403, 502, 503) and what the client is told."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
