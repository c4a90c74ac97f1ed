"""A burst of simultaneous requests is served, not refused: callers wait for a store connection, on every store.

The store clients' connection pools hold a bounded number of connections; a
call that finds them all busy waits for one (gateway/store.py) instead of
failing with `store_unavailable` or a plain 500. These are functional tests: a
bounded count and a generous time limit, no timing assertion.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from checks_support import ADMIN_KEY

KEYS = "sk-burst-0001,sk-burst-0002,sk-burst-0003,sk-burst-0004"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def burst_gateway(start_gateway: Callable[..., Any], store_url: str, guarded_redis_server: str | None) -> Any:
    """A gateway with several keys and no per-key concurrency limit, on the embedded store or on a
    password-protected Redis using db 5 (every managed Redis has a password)."""
    redis_url = f"{guarded_redis_server}/5" if store_url else ""
    return start_gateway(REDIS_URL=redis_url, OPENAI_KEY=KEYS, ADMIN_KEY=ADMIN_KEY, USER_CONCURRENCY_LIMIT="0")


async def all_at_once(url: str, count: int, method: str, path: str, **kwargs: Any) -> Counter[str]:
    """`count` requests sent together over as many connections; how many got each status (with the error code)."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = asyncio.Event()

        async def one() -> str:
            await start.wait()
            reply = await client.request(method, path, **kwargs)
            if reply.status_code == 200:
                return "200"
            try:
                return f"{reply.status_code} {reply.json()['error'].get('code') or reply.json()['error']['type']}"
            except (ValueError, KeyError, TypeError):
                return f"{reply.status_code} {reply.text[:60]!r}"

        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        await asyncio.sleep(0)  # every task is waiting on `start`
        start.set()
        return Counter(await asyncio.gather(*tasks))


def test_a_thousand_simultaneous_chat_requests_are_all_served(burst_gateway: Any) -> None:
    outcomes = asyncio.run(all_at_once(burst_gateway.url, 1000, "POST", "/v1/chat/completions", json=CHAT))
    assert outcomes == Counter({"200": 1000})


def test_three_hundred_simultaneous_admin_calls_are_all_answered(burst_gateway: Any) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    outcomes = asyncio.run(all_at_once(burst_gateway.url, 300, "GET", "/admin/keys", headers=headers))
    assert outcomes == Counter({"200": 300})
