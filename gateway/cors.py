"""Browsers calling the API directly: CORS on every proxy route.

A page on another origin may call poolgate with `fetch`, as the OAI Reverse
Proxy's client-side applications and AI Proxy's browser clients do. Credentials
travel as bearer tokens in headers, never cookies, so any origin may be allowed
(`CORS_ALLOWED_ORIGINS=*`, the default) without lending it anyone's session; a
list narrows it. A preflight `OPTIONS` is answered here, without a credential
(browsers never send one with it), allowing the request headers the official
SDKs send; replies expose poolgate's own headers so a page can read its wait,
limits and costs. Blocked origins (gateway/blocks.py) are refused before this.
"""

from __future__ import annotations

from typing import Any

# Request headers a browser may send: what the OpenAI and Anthropic SDKs and chat front-ends send.
_ALLOWED_HEADERS = frozenset({
    "authorization", "x-api-key", "api-key", "content-type", "accept", "anthropic-version", "anthropic-beta",
    "anthropic-dangerous-direct-browser-access", "x-request-id", "idempotency-key", "openai-organization",
    "openai-project", "openai-beta",
})
_ALLOWED_PREFIXES = ("x-stainless-", "openai-", "anthropic-")
# Reply headers a page may read.
EXPOSED_HEADERS = ", ".join((
    "x-queue-wait-ms", "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens", "x-request-id", "request-id", "openai-processing-ms", "cost", "monthlyCost",
    "monthlyRequests",
)).encode()
_METHODS = b"GET, POST, DELETE, OPTIONS"
_PREFLIGHT_MAX_AGE = b"600"


class Cors:
    def __init__(self, allowed_origins: tuple[str, ...]) -> None:
        self._any = "*" in allowed_origins
        self._origins = frozenset(o.rstrip("/").lower() for o in allowed_origins if o != "*")

    def allowed_origin(self, origin: bytes | None) -> bytes | None:
        """The Access-Control-Allow-Origin to answer `origin` with, or None when it is not allowed."""
        if origin is None:
            return None
        if self._any:
            return b"*"
        return origin if origin.decode("latin-1").rstrip("/").lower() in self._origins else None

    async def answer_preflight(self, headers: dict[bytes, bytes], send: Any) -> None:
        """204 to a preflight: what may be sent, for an allowed origin; nothing CORS for any other."""
        reply = [(b"content-length", b"0"), (b"vary", b"origin")]
        allowed = self.allowed_origin(headers.get(b"origin"))
        if allowed is not None:
            requested = headers.get(b"access-control-request-headers", b"").decode("latin-1")
            names = [n.strip().lower() for n in requested.split(",") if n.strip()]
            granted = ", ".join(n for n in names if n in _ALLOWED_HEADERS or n.startswith(_ALLOWED_PREFIXES))
            reply += [
                (b"access-control-allow-origin", allowed),
                (b"access-control-allow-methods", _METHODS),
                (b"access-control-allow-headers", granted.encode()),
                (b"access-control-max-age", _PREFLIGHT_MAX_AGE),
            ]
        await send({"type": "http.response.start", "status": 204, "headers": reply})
        await send({"type": "http.response.body", "body": b""})

    def with_cors(self, origin: bytes | None, send: Any) -> Any:
        """`send`, adding the CORS reply headers when an allowed origin asked."""
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return send
        extra = [(b"access-control-allow-origin", allowed), (b"access-control-expose-headers", EXPOSED_HEADERS),
                 (b"vary", b"origin")]

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return send_with_cors
