"""A Redis that comes back empty (restarted without persistence) gets the configured keys again, in every gateway.

Configured keys live in the environment; the store holds them only because a
gateway registered them at start-up. These tests restart a real redis-server
on the same port under two running gateways and watch traffic come back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from checks_support import ADMIN_KEY, admin
from processes import OwnRedis, free_port, wait_until_listening

from gateway.cli import render_config_reference

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
# A gateway checks for an emptied store every few seconds; this is a generous bound, not a measurement.
BACK_WITHIN_SEC = 20.0
# The gateway subprocesses get only the settings a test gives them, whatever the environment running the tests has.
SETTING_NAMES = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}


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


def served_again(url: str, path: str, body: dict[str, Any]) -> int:
    """The status of the first reply that is not 503, asking again until one is or the bound has passed."""
    deadline = time.monotonic() + BACK_WITHIN_SEC
    while True:
        reply = httpx.post(url + path, json=body, timeout=10)
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
    health = httpx.get(gateways[0].url + "/health", timeout=10)
    assert health.status_code == 503, health.text  # a load balancer takes this replica out; it is not a crash
    assert health.json()["status"] == "store_unavailable"
    status = httpx.get(gateways[0].url + "/status", timeout=10)
    assert status.status_code == 503, status.text
    assert status.json()["error"]["type"] == "store_unavailable"
    restartable_redis.start()  # back, and empty

    first_admin_call = admin(gateways[0], "GET", "/keys")
    assert first_admin_call.status_code == 200, first_admin_call.text
    assert served_again(gateways[0].url, "/v1/chat/completions", CHAT) == 200
    assert served_again(gateways[1].url, "/v1/messages", CLAUDE) == 200
    listed = admin(gateways[1], "GET", "/keys")
    assert listed.status_code == 200
    assert sorted(key["key"][-4:] for key in listed.json()["keys"]) == ["0001", "0002", "0003"]


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_a_lone_gateway_repopulates_the_store_without_being_asked(
    start_gateway: Callable[..., Any], restartable_redis: OwnRedis
) -> None:
    """No proxied request after the restart, only admin reads (which register nothing): the gateway notices on
    its own, within seconds."""
    gateway = start_gateway(REDIS_URL=restartable_redis.url_for_db(3), OPENAI_KEY="sk-alone-0004", ADMIN_KEY=ADMIN_KEY)
    restartable_redis.kill()
    restartable_redis.start()

    deadline = time.monotonic() + BACK_WITHIN_SEC
    while not (listed := admin(gateway, "GET", "/keys").json()["keys"]) and time.monotonic() < deadline:
        time.sleep(0.2)  # pacing the look (the admin API only reads), not ordering anything
    assert [key["key"][-4:] for key in listed] == ["0004"]
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200


@contextlib.contextmanager
def poolgate_serve(env: dict[str, str], cwd: Path) -> Iterator[tuple[str, list[str]]]:
    """`poolgate serve` as a real process; yields its URL and, once it has stopped, its stderr."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env={**clean, "PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "CHECK_KEYS": "false", **env},
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    logs: list[str] = []
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}", logs
    finally:
        process.terminate()
        logs.append(process.communicate(timeout=15)[1])


def test_every_gateway_process_repopulates_its_own_deployment(
    upstream: Any, restartable_redis: OwnRedis, tmp_path: Path
) -> None:
    """Two `poolgate serve` processes of two deployments (two prefixes) on one Redis: neither can do the
    other's work, so each coming back shows that each process watches for itself."""
    common = {"REDIS_URL": restartable_redis.url_for_db(4), "OPENAI_BASE_URL": upstream.url}
    first_env = {**common, "REDIS_PREFIX": "first:", "OPENAI_KEY": "sk-first-0005"}
    second_env = {**common, "REDIS_PREFIX": "second:", "OPENAI_KEY": "sk-second-0006"}
    with poolgate_serve(first_env, tmp_path) as (first, first_logs), \
            poolgate_serve(second_env, tmp_path) as (second, second_logs):
        restartable_redis.kill()
        restartable_redis.start()
        assert served_again(first, "/v1/chat/completions", CHAT) == 200
        assert served_again(second, "/v1/chat/completions", CHAT) == 200
    logs = "".join(first_logs + second_logs)
    assert "registering 1 again" in logs
    for secret in ("sk-first-0005", "sk-second-0006", "repopulate-s3cret"):
        assert secret not in logs
