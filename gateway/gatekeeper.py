"""Stage 3, authenticate: who is asking, and may they use the proxy at all.

`GATEKEEPER=none` lets anyone in; otherwise it names the credentials accepted, comma-separated:
`proxy_key` (one shared password), `user_token` (each person their own token), `app_store` and `google`
(session tokens from signing in, accounts/sessions.py; an admin-made session passes with any of
user_token, app_store or google). The credential is read wherever an SDK or a chat front-end puts it
(`Authorization: Bearer`, `x-api-key`, `?key=`) and compared in constant time. A user token is only
hashed here, and a session's signature and expiry checked (remembered once verified): whose it is, and
whether that user may ask now (or its sessions were revoked), is decided in the store by admission (stage
5), in the same step that applies their limits, so authenticating costs no round trip of its own.
`ADMIN_KEY` as a token always passes.
An App Store session that expired is told 407 `session_expired` (Pico's clients sign in again silently);
every other refused credential 401.
The identity — the user, else the client's address — is what limits and fairness are counted against.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from accounts.schema import token_hash
from accounts.sessions import SessionRefused, Sessions, looks_like_session
from gateway.errors import GatewayError

SESSION_MODES = frozenset({"user_token", "app_store", "google"})  # where an admin-made session is accepted


@dataclass(frozen=True, slots=True)
class Identity:
    id: str  # "ip:203.0.113.7"; "user:<id>" once admission found the token's user; "admin"
    kind: str  # "ip" | "token" (a user token, its user still to be found) | "admin"
    token_hash: str = ""  # with kind "token": the sha256 of the token, all the store ever sees of it
    # (a session's: "session:{user id}:{generation}", accounts/sessions.py)
    address: str = ""  # the client's address
    session_method: str = ""  # with a session: how it was made (app_store | google | admin)


def presented_credential(headers: dict[bytes, bytes], query_key: str | None) -> str | None:
    """The credential a client sent, from any of the places clients put it."""
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get(b"x-api-key") or headers.get(b"api-key")
    if api_key:
        return api_key.decode("latin-1").strip()
    return query_key or None


class Gatekeeper:
    def __init__(self, mode: str, proxy_key: str, admin_key: str = "", sessions: Sessions | None = None) -> None:
        self._modes = frozenset(m.strip() for m in mode.split(",") if m.strip()) - {"none"}
        self._proxy_key = proxy_key.encode()
        self._admin_key = admin_key.encode()
        self._sessions = sessions if self._modes & SESSION_MODES else None
        self._accepts_tokens = "user_token" in self._modes

    def authenticate(self, headers: dict[bytes, bytes], query_key: str | None, client_ip: str) -> Identity:
        if not self._modes:
            return Identity(id=f"ip:{client_ip}", kind="ip", address=client_ip)
        credential = presented_credential(headers, query_key)
        if credential is None:
            what = "proxy key" if self._modes == {"proxy_key"} else "user token" if self._accepts_tokens \
                else "session token (sign in first)"
            raise GatewayError(
                "authentication", f"No {what} was provided. Send it as `Authorization: Bearer <token>` or `x-api-key`.",
            )
        if self._admin_key and self._modes != {"proxy_key"} and hmac.compare_digest(
                credential.encode(), self._admin_key):
            return Identity(id="admin", kind="admin", address=client_ip)
        if "proxy_key" in self._modes and self._proxy_key and hmac.compare_digest(
                credential.encode(), self._proxy_key):
            return Identity(id=f"ip:{client_ip}", kind="ip", address=client_ip)
        if self._sessions is not None and looks_like_session(credential):
            return self._session(credential, client_ip)
        if self._accepts_tokens:
            return Identity(id=f"ip:{client_ip}", kind="token", token_hash=token_hash(credential), address=client_ip)
        if self._modes == {"proxy_key"}:
            raise GatewayError("authentication", "The proxy key is not valid.")
        raise GatewayError("authentication", "This credential is not valid here.")

    def _session(self, credential: str, client_ip: str) -> Identity:
        assert self._sessions is not None
        try:
            session = self._sessions.verify(credential)
        except SessionRefused as refused:
            if refused.expired and refused.method == "app_store" and "app_store" in self._modes:
                raise GatewayError("session_expired", refused.message) from None
            raise GatewayError("authentication", refused.message) from None
        if session.method != "admin" and session.method not in self._modes:
            raise GatewayError("authentication", "Sessions of this sign-in are not accepted here.")
        return Identity(id=f"ip:{client_ip}", kind="token", token_hash=session.admission_token, address=client_ip,
                        session_method=session.method)
