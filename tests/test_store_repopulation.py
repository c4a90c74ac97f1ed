"""A Redis that comes back empty (restarted without persistence) gets the configured keys again, in every gateway.

Configured keys live in the environment; the store holds them only because a
gateway registered them at start-up. These tests restart a real redis-server
on the same port under two running gateways and watch traffic come back.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from checks_support import ADMIN_KEY, admin
from processes import OwnRedis

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
# A gateway checks for an emptied store every few seconds; this is a generous bound, not a measurement.
BACK_WITHIN_SEC = 20.0


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A password-protected redis-server without persistence that the test restarts, empty, on the same port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this")
    server = OwnRedis(binary, tmp_path, password="repopulate-s3cret")
    server.start()
    yield server
    server.kill()


def served_again(gateway: Any, path: str, body: dict[str, Any]) -> int:
    """The status of the first reply that is not 503, asking again until one is or the bound has passed."""
    deadline = time.monotonic() + BACK_WITHIN_SEC
    while True:
        reply = httpx.post(gateway.url + path, json=body, timeout=10)
        if reply.status_code != 503 or time.monotonic() > deadline:
            return reply.status_code
        time.sleep(0.2)  # pacing the retries, not ordering anything


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_after_redis_restarts_empty_every_gateway_serves_again(
    start_gateway: Callable[..., Any], restartable_redis: OwnRedis
) -> None:
    env = {
        "REDIS_URL": restartable_redis.url_for_db(3),
        "OPENAI_KEY": "sk-back-0001,sk-back-0002",
        "ANTHROPIC_KEY": "sk-ant-back-0003",
        "ADMIN_KEY": ADMIN_KEY,
    }
    gateways = [start_gateway(**env), start_gateway(**env)]
    for gateway in gateways:
        assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200

    restartable_redis.kill()
    while_down = admin(gateways[0], "GET", "/keys")
    assert while_down.status_code == 503, while_down.text
    assert while_down.json()["error"]["type"] == "store_unavailable"
    restartable_redis.start()  # back, and empty

    first_admin_call = admin(gateways[0], "GET", "/keys")
    assert first_admin_call.status_code == 200, first_admin_call.text
    assert served_again(gateways[0], "/v1/chat/completions", CHAT) == 200
    assert served_again(gateways[1], "/v1/messages", CLAUDE) == 200
    listed = admin(gateways[1], "GET", "/keys")
    assert listed.status_code == 200
    assert sorted(key["key"][-4:] for key in listed.json()["keys"]) == ["0001", "0002", "0003"]


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_a_lone_gateway_repopulates_the_store_without_being_asked(
    start_gateway: Callable[..., Any], restartable_redis: OwnRedis
) -> None:
    """No request and no admin call after the restart: the gateway notices on its own, within seconds."""
    gateway = start_gateway(REDIS_URL=restartable_redis.url_for_db(3), OPENAI_KEY="sk-alone-0004", ADMIN_KEY=ADMIN_KEY)
    restartable_redis.kill()
    restartable_redis.start()

    import redis

    store = redis.Redis.from_url(restartable_redis.url_for_db(3))
    deadline = time.monotonic() + BACK_WITHIN_SEC
    try:
        while not store.smembers(f"{gateway.app.settings.redis_prefix}keys:openai") and time.monotonic() < deadline:
            time.sleep(0.2)  # pacing the look, not ordering anything
    finally:
        store.close()
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
