"""SIGTERM ends `poolgate serve` within a bound even when Redis has stopped answering at that moment, with one
worker or several; a second SIGTERM to a worker process ends it at once. Real processes, a real redis-server
paused with `CLIENT PAUSE` (every command waits; connections still open), as a stuck or failing-over Redis is."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REQUIRE_REDIS
from processes import OwnRedis, free_port, wait_until_listening

from fake_upstream import run_mock_upstream_in_thread
from gateway.cli import render_config_reference

KEY = "sk-good-Bd01Nd"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
# Redis stays paused far longer than any bound below: an exit within the bound did not wait for Redis.
PAUSE_MS = 120_000
# SHUTDOWN_GRACE_SEC is 1 s below; the rest of the shut-down is bounded by poolgate (gateway/app.py) to well
# under this. Without the bounds a paused Redis holds the process for the whole pause, or forever.
EXIT_WITHIN_SEC = 30


@pytest.fixture
def paused_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("redis-cli") is None:
        if REQUIRE_REDIS:
            pytest.fail("POOLGATE_REQUIRE_REDIS=1 but redis-server / redis-cli are not installed")
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.kill()


def _pause(redis: OwnRedis) -> None:
    """Every client's commands wait from now on (the pause itself is answered OK)."""
    cli = shutil.which("redis-cli") or "redis-cli"
    answer = subprocess.run([cli, "-p", str(redis.port), "CLIENT", "PAUSE", str(PAUSE_MS), "ALL"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    assert answer == "OK"


def _environment(**extra: str) -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    upstream = run_mock_upstream_in_thread()
    processes: list[subprocess.Popen[str]] = []

    def start(redis_url: str, *args: str) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=_environment(OPENAI_KEY=KEY, OPENAI_BASE_URL=upstream.url, REDIS_URL=redis_url,
                             REDIS_PREFIX=f"bounded-{uuid.uuid4().hex[:8]}:", CHECK_KEYS="false",
                             SHUTDOWN_GRACE_SEC="1"),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        processes.append(process)
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        return f"http://127.0.0.1:{port}", process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    for pid in _stragglers:
        _kill_quietly(pid)
    _stragglers.clear()
    upstream.stop()


_stragglers: list[int] = []  # worker processes a failed test leaves behind, killed at the end


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children(pid: int) -> list[int]:
    """The worker processes of `poolgate serve --workers N` (uvicorn's supervisor's children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not collected it yet


def _exits_within(process: subprocess.Popen[str], seconds: float) -> str:
    """The process's stderr once it has exited; fails the test if it is still running after `seconds`."""
    try:
        return process.communicate(timeout=seconds)[1]
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {seconds:g} s after SIGTERM: the shut-down hangs") from None


def _serve_some(url: str) -> None:
    for _ in range(4):  # fresh connections, so every worker serves (and has metrics to flush at shut-down)
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=20).status_code == 200


def test_one_process_exits_on_sigterm_while_redis_does_not_answer(serve, paused_redis):
    url, process = serve(paused_redis.url)
    _serve_some(url)
    _pause(paused_redis)
    process.send_signal(signal.SIGTERM)
    stderr = _exits_within(process, EXIT_WITHIN_SEC)
    assert "did not finish within" in stderr, stderr


def test_several_workers_exit_on_sigterm_while_redis_does_not_answer(serve, paused_redis):
    url, process = serve(paused_redis.url, "--workers", "2")
    workers = _children(process.pid)
    _stragglers.extend(workers)
    assert len(workers) == 2
    _serve_some(url)
    _pause(paused_redis)
    process.send_signal(signal.SIGTERM)
    _exits_within(process, EXIT_WITHIN_SEC)
    assert not [pid for pid in workers if _alive(pid)], "no worker outlives the supervisor"


def test_a_second_sigterm_to_a_worker_ends_it_at_once(serve, paused_redis):
    """The first SIGTERM starts the graceful shut-down (held up by a paused Redis); the second skips it."""
    url, process = serve(paused_redis.url, "--workers", "2")
    workers = _children(process.pid)
    _stragglers.extend(workers)
    _serve_some(url)
    _pause(paused_redis)
    worker = workers[0]
    os.kill(worker, signal.SIGTERM)
    time.sleep(0)  # no ordering by time: the second signal is sent whatever state the first left the worker in
    os.kill(worker, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "a second SIGTERM ends a worker at once"
