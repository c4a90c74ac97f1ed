"""SIGTERM: no new connections, the streams in flight finish (up to SHUTDOWN_GRACE_SEC), everything held is given
back; a second signal exits at once. Run against `poolgate serve` as a real process, as a platform stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from processes import free_port, wait_until_listening

from fake_upstream import run_mock_upstream_in_thread
from gateway.cli import render_config_reference

KEY = "sk-good-Sd01Gr"
# 60 chunks at 10 tokens a second: a stream that is still running for several seconds after it has begun.
TOKENS, TOKENS_PER_SEC = 60, 10.0
STREAM = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[str]
    redis_url: str
    prefix: str

    def stream_started(self, client: httpx.Client) -> Iterator[str]:
        """A streamed chat, returned once its first event has arrived (so it is in flight, key leased)."""
        request = client.build_request("POST", self.url + "/v1/chat/completions", json=STREAM)
        response = client.send(request, stream=True)
        assert response.status_code == 200
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: {"):
                break
        return lines

    def refuses_connections(self) -> bool:
        """Polls until a new connection is refused (the listener closed), for at most 10 s."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/health", timeout=1)
            except httpx.ConnectError:
                return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def leases_in_store(self) -> tuple[int, int]:
        """(lease records, the key's in-flight count), read from the redis-server after the process is gone."""
        import redis

        store = redis.Redis.from_url(self.redis_url)
        key_ids = store.smembers(f"{self.prefix}keys:openai")
        inflight = sum(int(store.hget(f"{self.prefix}key:{kid.decode()}", "inflight") or 0) for kid in key_ids)
        return store.zcard(f"{self.prefix}leases"), inflight


def _environment(**extra: str) -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


@pytest.fixture
def start(tmp_path) -> Iterator:
    upstream = run_mock_upstream_in_thread(tokens_per_sec=TOKENS_PER_SEC, output_tokens=TOKENS)
    processes: list[subprocess.Popen[str]] = []

    def start_gateway(redis_url: str = "", **env: str) -> Gateway:
        port, prefix = free_port(), f"shutdown-{uuid.uuid4().hex[:8]}:"
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=_environment(OPENAI_KEY=KEY, OPENAI_BASE_URL=upstream.url, REDIS_URL=redis_url, REDIS_PREFIX=prefix,
                             CHECK_KEYS="false", **env),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        processes.append(process)
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        return Gateway(f"http://127.0.0.1:{port}", process, redis_url, prefix)

    yield start_gateway
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    upstream.stop()


def _rest_of(lines: Iterator[str]) -> list[str]:
    events = []
    with contextlib.suppress(httpx.HTTPError):  # a stream cut short ends the iteration with an error
        events = [line for line in lines if line.startswith("data: ")]
    return events


def test_a_stream_in_flight_finishes_whole_while_new_connections_are_refused(start, store_url):
    gateway = start(store_url, SHUTDOWN_GRACE_SEC="60")
    with httpx.Client(timeout=30) as client:
        lines = gateway.stream_started(client)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.refuses_connections()
        events = _rest_of(lines)
    assert events[-1] == "data: [DONE]", "the stream finished whole"
    assert len([e for e in events if '"content"' in e]) >= TOKENS - 2, "every token, none dropped"
    gateway.process.wait(timeout=30)
    stderr = gateway.process.stderr.read() if gateway.process.stderr else ""
    assert "SHUTDOWN_GRACE_SEC" in stderr and "Traceback" not in stderr
    if store_url:
        assert gateway.leases_in_store() == (0, 0), "the lease was given back, not left to expire"


def test_a_stream_longer_than_the_grace_is_cut_and_its_lease_given_back(start, redis_server):
    if redis_server is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    # LEASE_TTL_SEC far beyond the test: a lease gone from the store was given back, it did not expire.
    gateway = start(redis_server, SHUTDOWN_GRACE_SEC="1", LEASE_TTL_SEC="600")
    with httpx.Client(timeout=30) as client:
        lines = gateway.stream_started(client)
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(timeout=30)
        events = _rest_of(lines)
    assert "data: [DONE]" not in events, "cut at the end of the grace"
    assert gateway.leases_in_store() == (0, 0)


def test_a_second_signal_exits_at_once(start):
    gateway = start(SHUTDOWN_GRACE_SEC="60")
    with httpx.Client(timeout=30) as client:
        lines = gateway.stream_started(client)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.refuses_connections()  # the first signal has been taken
        gateway.process.send_signal(signal.SIGTERM)
        gateway.process.wait(timeout=30)
        events = _rest_of(lines)
    assert "data: [DONE]" not in events, "it did not wait for the stream it would otherwise have finished"
    stderr = gateway.process.stderr.read() if gateway.process.stderr else ""
    assert "exiting now" in stderr
