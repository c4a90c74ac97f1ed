"""Stage 3, authenticate: who is asking, and may they use the proxy at all.

`GATEKEEPER=none` lets anyone in; `proxy_key` asks for one shared password;
`user_token` asks each person for their own token. The credential is read
wherever an SDK or a chat front-end puts it (`Authorization: Bearer`,
`x-api-key`, `?key=`) and compared in constant time. A user token is only
hashed here: whose it is, and whether that user may ask now, is decided in the
store by admission (stage 5), in the same step that applies their limits, so
authenticating a user costs no round trip of its own. `ADMIN_KEY` as a token
always passes.
The identity — the user, else the client's address — is what limits and
fairness are counted against.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from accounts.schema import token_hash
from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Identity:
    id: str  # "ip:203.0.113.7"; "user:<id>" once admission found the token's user; "admin"
    kind: str  # "ip" | "token" (a user token, its user still to be found) | "admin"
    token_hash: str = ""  # with kind "token": the sha256 of the token, all the store ever sees of it
    address: str = ""  # the client's address


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
    def __init__(self, mode: str, proxy_key: str, admin_key: str = "") -> None:
        self._mode = mode
        self._proxy_key = proxy_key.encode()
        self._admin_key = admin_key.encode()

    def authenticate(self, headers: dict[bytes, bytes], query_key: str | None, client_ip: str) -> Identity:
        if self._mode == "proxy_key":
            credential = presented_credential(headers, query_key)
            if credential is None:
                raise GatewayError(
                    "authentication",
                    "No proxy key was provided. Send it as `Authorization: Bearer <key>` or `x-api-key`.",
                )
            if not hmac.compare_digest(credential.encode(), self._proxy_key):
                raise GatewayError("authentication", "The proxy key is not valid.")
        elif self._mode == "user_token":
            credential = presented_credential(headers, query_key)
            if credential is None:
                raise GatewayError(
                    "authentication",
                    "No user token was provided. Send it as `Authorization: Bearer <token>` or `x-api-key`.",
                )
            if self._admin_key and hmac.compare_digest(credential.encode(), self._admin_key):
                return Identity(id="admin", kind="admin", address=client_ip)
            return Identity(id=f"ip:{client_ip}", kind="token", token_hash=token_hash(credential), address=client_ip)
        return Identity(id=f"ip:{client_ip}", kind="ip", address=client_ip)
