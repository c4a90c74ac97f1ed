"""The bare relay: the least a Litestar app can do to relay a request, the practical limit.

Same server (uvicorn, uvloop, httptools), same HTTP client (poolgate's
`UpstreamClient`, httpx over aiohttp), one fixed key, and nothing else: no
authentication, no key pool, no accounting, no Redis. Whatever poolgate spends
above this is the price of its pipeline.

    BARE_RELAY_UPSTREAM=http://127.0.0.1:8900 BARE_RELAY_KEY=sk-... \\
        uvicorn bench.bare_relay:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from litestar import Litestar, Request, get, post
from litestar.response import Response, Stream

from gateway.upstream_client import UpstreamClient, read_body

UPSTREAM = os.environ.get("BARE_RELAY_UPSTREAM", "http://127.0.0.1:8900")
HEADERS = [
    (b"authorization", f"Bearer {os.environ.get('BARE_RELAY_KEY', 'sk-bare')}".encode()),
    (b"content-type", b"application/json"),
    (b"accept-encoding", b"identity"),
]
client = UpstreamClient(timeout_sec=600)


@post("/v1/{path:path}")
async def relay(request: Request, path: str) -> Response[bytes] | Stream:
    reply = await client.send("POST", f"{UPSTREAM}/v1{path}", HEADERS, await request.body())
    media_type = reply.headers.get("content-type", "application/json")
    if media_type.startswith("text/event-stream"):
        async def events() -> AsyncIterator[bytes]:
            async for chunk in reply.aiter_raw():
                yield chunk

        return Stream(events(), status_code=reply.status_code, media_type=media_type)
    return Response(await read_body(reply), status_code=reply.status_code, media_type=media_type)


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def close_client() -> None:
    await client.aclose()


app = Litestar([relay, health], on_shutdown=[close_client], logging_config=None)
