"""Stage 3, authenticate: who is asking, and may they use the proxy at all.

`GATEKEEPER=none` lets anyone in; `proxy_key` asks for one shared password. The
credential is read wherever an SDK or a chat front-end puts it
(`Authorization: Bearer`, `x-api-key`, `?key=`) and compared in constant time.
The identity — the user, else the client's address — is what limits and
fairness are counted against.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Identity:
    id: str  # "ip:203.0.113.7" now; "user:<token id>" or "sub:<jwt subject>" when users arrive
    kind: str  # "ip"


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
    def __init__(self, mode: str, proxy_key: str) -> None:
        self._mode = mode
        self._proxy_key = proxy_key.encode()

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
        return Identity(id=f"ip:{client_ip}", kind="ip")
