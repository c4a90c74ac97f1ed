"""The admin lockout counts every wrong guess, however many arrive at once, and only against their address."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from checks_support import ADMIN_KEY

WRONG = {"authorization": "Bearer not-the-admin-key"}


async def _guess_at_once(url: str, guesses: int) -> Counter[int]:
    limits = httpx.Limits(max_connections=guesses)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        replies = await asyncio.gather(*(client.get(url + "/admin/keys", headers=WRONG) for _ in range(guesses)))
    return Counter(reply.status_code for reply in replies)


def _from_address(url: str, address: str) -> httpx.Response:
    """The right key, sent from another loopback address (Linux routes all of 127/8 to lo)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})


def test_concurrent_wrong_guesses_are_each_counted_against_the_limit(start_gateway: Any) -> None:
    gateway = start_gateway(ADMIN_KEY=ADMIN_KEY, ADMIN_LOCKOUT_FAILURES="10", ADMIN_LOCKOUT_SEC="60")

    statuses = asyncio.run(_guess_at_once(gateway.url, 60))

    assert statuses == Counter({401: 10, 429: 50}), "exactly the limit's worth of guesses may be checked"


def test_hundreds_of_concurrent_wrong_guesses_get_no_server_error(start_gateway: Any) -> None:
    gateway = start_gateway(ADMIN_KEY=ADMIN_KEY, ADMIN_LOCKOUT_FAILURES="10", ADMIN_LOCKOUT_SEC="60")

    statuses = asyncio.run(_guess_at_once(gateway.url, 300))

    assert statuses == Counter({401: 10, 429: 290})


def test_a_locked_out_address_does_not_lock_out_another(start_gateway: Any) -> None:
    gateway = start_gateway(ADMIN_KEY=ADMIN_KEY, ADMIN_LOCKOUT_FAILURES="3", ADMIN_LOCKOUT_SEC="60")
    asyncio.run(_guess_at_once(gateway.url, 20))  # from 127.0.0.1

    locked = _from_address(gateway.url, "127.0.0.1")
    other = _from_address(gateway.url, "127.0.0.2")

    assert locked.status_code == 429
    assert other.status_code == 200
