"""A chat-completions upstream whose keys each take a fixed number of requests at once, for the bench.

Any request beyond a key's limit is refused at once with a 429 (`retry-after`
in whole seconds, rounded down, and the precise `x-ratelimit-reset-requests`),
as concurrency-limited upstreams do. `GET /_stats` tells what it answered.
Run: `uvicorn bench.limited_upstream:app`; `LIMITED_CONCURRENCY` (default 1)
and `LIMITED_LATENCY_SEC` (default 0.2) set the limit and each answer's time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

CONCURRENCY = int(os.environ.get("LIMITED_CONCURRENCY", "1"))
LATENCY_SEC = float(os.environ.get("LIMITED_LATENCY_SEC", "0.2"))
_in_flight: dict[str, int] = {}
_served_at: list[float] = []  # time.time() of each 200
_refused = 0
_CHAT = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _refused
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/_stats":
        await _reply(send, 200, {"served_at": _served_at, "refused": _refused})
        return
    key = dict(scope["headers"]).get(b"authorization", b"")
    if _in_flight.get(key, 0) >= CONCURRENCY:
        _refused += 1
        await _reply(send, 429, {"error": {"message": "Too many requests at once", "type": "requests",
                                           "code": "rate_limit_exceeded"}},
                     [(b"retry-after", b"1"), (b"x-ratelimit-reset-requests", b"1.3s")])
        return
    _in_flight[key] = _in_flight.get(key, 0) + 1
    try:
        await asyncio.sleep(LATENCY_SEC)
    finally:
        _in_flight[key] -= 1
    _served_at.append(time.time())
    await _reply(send, 200, _CHAT)


async def _reply(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
