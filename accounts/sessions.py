"""Sessions: short-lived tokens a user gets by signing in (App Store, Google) or from an admin.

A session is an HS256 JWT signed with `JWT_SECRET`: `sub` (the user id), `iat`, `exp`, `jti`, `method`
(app_store | google | admin) and `gen`, the user's session generation when it was made. The signature and
`exp` are the token's own, checked in the gateway process; whether the user still exists and whether its
sessions were revoked since (`POST /admin/users/{id}/revoke-sessions` bumps the generation) is the store's
decision, taken by admission's script (`admit.lua`) in the step that admits the request: no round trip of
its own. Verified tokens are remembered, bounded, so a session costs a dict look-up per request, not a
signature check (PyJWT's decode is tens of µs).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from accounts.schema import AccountsSchema

METHODS = ("app_store", "google", "admin")
ALGORITHM = "HS256"
_HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    generation: int
    method: str  # app_store | google | admin
    expires_at: int  # unix seconds (the token's exp)

    @property
    def admission_token(self) -> str:
        """What admission's script is given in place of a token hash: whose session, of which generation."""
        return f"session:{self.user_id}:{self.generation}"


class SessionRefused(Exception):
    """Not a session this gateway accepts. `expired` only when the signature was good: then `method` is known."""

    def __init__(self, message: str, *, expired: bool = False, method: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.expired = expired
        self.method = method


def looks_like_session(credential: str) -> bool:
    """A JWT (three base64url parts, a JSON header) rather than a user token or a proxy key."""
    return credential.startswith("eyJ") and credential.count(".") == 2


class Sessions:
    """Makes and checks the session tokens of one `JWT_SECRET`."""

    def __init__(self, secret: str, ttl_sec: int, *, remembered: int = 4096) -> None:
        self._secret = secret
        self.ttl_sec = ttl_sec
        self._remembered = remembered
        self._verified: dict[str, Session] = {}  # token -> its session, oldest first

    def mint(self, user_id: str, generation: int, method: str, ttl_sec: int | None = None) -> tuple[str, int]:
        """A new session token for the user: (token, exp as unix seconds)."""
        now = int(time.time())
        expires_at = now + (ttl_sec or self.ttl_sec)
        claims = {"sub": user_id, "iat": now, "exp": expires_at, "jti": secrets.token_urlsafe(12),
                  "method": method, "gen": generation}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires_at

    def verify(self, token: str) -> Session:
        """The session the token carries, or SessionRefused: a bad signature, another algorithm, no or past exp.

        The expiry is checked on every use against this process's clock: `exp` is the token's own claim,
        and nothing is compared across processes. Revocation is not decided here but by the store.
        """
        session = self._verified.get(token)
        if session is None:
            session = self._decode(token)
            if len(self._verified) >= self._remembered:
                del self._verified[next(iter(self._verified))]  # the oldest goes
            self._verified[token] = session
        if session.expires_at <= time.time():
            self._verified.pop(token, None)
            raise SessionRefused("This session has expired: sign in again.", expired=True, method=session.method)
        return session

    def _decode(self, token: str) -> Session:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "iat", "exp", "jti", "method", "gen"]})
        except jwt.ExpiredSignatureError:
            # PyJWT checks the signature before the claims: this token is ours, only old.
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"verify_exp": False})
            raise SessionRefused("This session has expired: sign in again.", expired=True,
                                 method=str(claims.get("method", ""))) from None
        except jwt.PyJWTError:
            raise SessionRefused("This session token is not valid.") from None
        user_id, generation, method = claims["sub"], claims["gen"], claims["method"]
        if not (isinstance(user_id, str) and user_id.isalnum() and isinstance(generation, int)
                and not isinstance(generation, bool) and generation >= 0 and method in METHODS):
            raise SessionRefused("This session token is not valid.")
        return Session(user_id, generation, method, int(claims["exp"]))


class SessionBook:
    """Sessions' state in the store: each user's generation, and revoking every session of a user at once."""

    def __init__(self, store: Any, schema: AccountsSchema) -> None:
        self._store = store
        self._schema = schema
        self._revoke = store.register_script((_HERE / "revoke_sessions.lua").read_text())

    async def generation(self, user_id: str) -> int | None:
        """The user's current session generation, or None when there is no such user."""
        found = await self._store.hmget(self._schema.user(user_id), "id", "session_gen")
        if found[0] is None:
            return None
        return int(found[1] or 0)

    async def revoke(self, user_id: str) -> int | None:
        """End every session of the user made so far: its new generation, or None when there is no such user."""
        generation = await self._revoke(keys=[self._schema.user(user_id)], args=[])
        return None if int(generation) < 0 else int(generation)
