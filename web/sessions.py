"""Admin sign-in for the pages: a session cookie instead of the admin key, and a CSRF token per session.

Logging in with `ADMIN_KEY` opens a session: a random id, 32 bytes, sent to the
browser in a cookie (HttpOnly, SameSite=Strict, Secure when the request came
over HTTPS — as uvicorn reports it, so `X-Forwarded-Proto` counts only from a
trusted proxy, `FORWARDED_ALLOW_IPS` — and expiring after
`ADMIN_SESSION_TTL_SEC`). The store keeps only the id's hash, expiring with the
cookie, so every gateway process accepts the session and logout ends it
everywhere; a copy of the store opens no session, and a new ADMIN_KEY ends them
all. The admin key is never the cookie, never in a page, never in a log.

Every form of a session carries its CSRF token, an HMAC of the session id: a
page from elsewhere cannot read it (the cookie is HttpOnly and the pages are
same-origin), so a post without it is refused. The login form, before any
session, uses a double-submit cookie of its own.

    {prefix}admin:session:{sha256 of the id}   STRING HMAC-SHA256(ADMIN_KEY, id), expiring (PX) with the session
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from litestar.datastructures import Cookie

SESSION_COOKIE = "poolgate_admin"
LOGIN_COOKIE = "poolgate_login"  # the login form's double-submit CSRF token, before a session exists
_CSRF_PURPOSE = b"poolgate admin pages csrf"


def session_key(redis_prefix: str, session_id: str) -> str:
    """The one Redis key a session writes."""
    return f"{redis_prefix}admin:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


class AdminSessions:
    """Open, check and end admin sessions in the shared store.

    A session is tied to the admin key it was opened with: the store holds an HMAC of the session id under
    that key (useless without the id, which only the cookie has), so changing ADMIN_KEY ends every session.
    """

    def __init__(self, store: Any, redis_prefix: str, ttl_sec: int, admin_key: str) -> None:
        self._store = store
        self._prefix = redis_prefix
        self._admin_key = admin_key.encode()
        self.ttl_sec = ttl_sec

    async def open(self) -> str:
        """A new session's id (for the cookie only)."""
        session_id = secrets.token_urlsafe(32)
        await self._store.set(session_key(self._prefix, session_id), self._seal(session_id), px=self.ttl_sec * 1000)
        return session_id

    async def is_open(self, session_id: str) -> bool:
        if not session_id or len(session_id) > 100:
            return False
        sealed = await self._store.get(session_key(self._prefix, session_id))
        if sealed is None:
            return False
        stored = sealed.decode() if isinstance(sealed, bytes) else str(sealed)
        return hmac.compare_digest(stored.encode(), self._seal(session_id).encode())

    async def close(self, session_id: str) -> None:
        if session_id and len(session_id) <= 100:
            await self._store.delete(session_key(self._prefix, session_id))

    def _seal(self, session_id: str) -> str:
        return hmac.new(self._admin_key, session_id.encode(), hashlib.sha256).hexdigest()


def csrf_token(session_id: str) -> str:
    """The CSRF token of a session's forms: derived from the id, so it needs no storage of its own."""
    return hmac.new(session_id.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def csrf_matches(expected: str, given: Any) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def cookie(name: str, value: str, *, max_age: int, secure: bool, path: str = "/admin") -> Cookie:
    """HttpOnly and SameSite=Strict always, Secure over HTTPS; `max_age` 0 deletes it."""
    return Cookie(key=name, value=value, path=path, max_age=max_age, httponly=True, samesite="strict", secure=secure)
