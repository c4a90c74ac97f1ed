"""Before any route: blocked addresses and origins, `/admin`'s allowed networks, and CORS.

Runs first for every HTTP request, proxy route or not (gateway/app.py), from
what this process already holds: no store call. Order matters: a blocked
address or origin is refused before CORS is considered, so BLOCKED_ORIGINS wins
over CORS_ALLOWED_ORIGINS, and a preflight from a blocked origin gets no CORS
grant either.
"""

from __future__ import annotations

from typing import Any

from gateway.blocks import Blocks, blocked_page
from gateway.cors import Cors
from gateway.errors import OPENAI, GatewayError, render_error
from gateway.routing import Route


class FrontDoor:
    def __init__(self, blocks: Blocks, cors: Cors, *, block_message: str, block_redirect: str) -> None:
        self.blocks = blocks
        self._cors = cors
        self._message = block_message
        self._redirect = block_redirect

    async def let_in(self, scope: dict[str, Any], send: Any, route: Route | None) -> Any | None:
        """The `send` to serve the request with (CORS headers added when asked), or None once it was refused."""
        headers = dict(scope["headers"])
        client = scope.get("client")
        address = client[0] if client else "unknown"
        dialect = route.dialect if route is not None else OPENAI
        if self.blocks.address_blocked(address):
            await _send_error(send, dialect, GatewayError(
                "blocked_address", "Requests from this address are not accepted here."))
            return None
        if route is None and _is_admin(scope["path"]) and self.blocks.admin_refused(address):
            await _send_error(send, dialect, GatewayError(
                "blocked_address", "The admin API does not answer this address (ADMIN_WHITELIST)."))
            return None
        if self.blocks.origin_blocked(headers):
            if b"text/html" in headers.get(b"accept", b""):
                await _send_page(send, blocked_page(self._message, self._redirect))
            else:
                await _send_error(send, dialect, GatewayError("blocked_origin", self._message))
            return None
        if route is None:
            return send
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._cors.answer_preflight(headers, send)
            return None
        return self._cors.with_cors(headers.get(b"origin"), send)


def _is_admin(path: str) -> bool:
    return path.lstrip("/").lower().split("/", 1)[0] == "admin"


async def _send_error(send: Any, dialect: str, error: GatewayError) -> None:
    status, headers, body = render_error(dialect, error)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_page(send: Any, page: bytes) -> None:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(page)).encode()),
               (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": page})
