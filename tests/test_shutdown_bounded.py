"""SIGTERM ends `poolgate serve` within a bound even when Redis has stopped answering at that moment, with one
worker or several; a second SIGTERM to a worker process ends it at once. Real processes, a real redis-server
paused with `CLIENT PAUSE` (every command waits; connections still open), as a stuck or failing-over Redis is."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
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
    for pid in _stragglers:  # first: a worker left behind holds the stderr pipe open
        _kill_quietly(pid)
    _stragglers.clear()
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
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
    return [child for child in found if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


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
    assert "Traceback" not in _exits_within(process, EXIT_WITHIN_SEC)


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


def test_the_supervisor_exits_within_a_bound_even_when_a_worker_never_does(serve, paused_redis):
    """A worker that cannot act on SIGTERM (stopped here; stuck in a C call or a hung store elsewhere) is killed
    once its grace and its app's shut-down are over: the service ends and the platform can start it again."""
    _, process = serve(paused_redis.url, "--workers", "2")
    workers = _children(process.pid)
    _stragglers.extend(workers)
    os.kill(workers[0], signal.SIGSTOP)
    process.send_signal(signal.SIGTERM)
    stderr = _exits_within(process, EXIT_WITHIN_SEC + 15)
    assert not _alive(workers[0])
    assert "did not exit in time after SIGTERM: killing it" in stderr


@pytest.mark.parametrize("signalled", ["worker", "supervisor"])
def test_a_second_sigterm_ends_a_worker_at_once(tmp_path, paused_redis, signalled):
    """A stream in flight on one worker; SIGTERM (to that worker, or to the supervisor, which passes it on) starts
    the graceful exit, which would let the stream finish; a second SIGTERM ends the worker at once, cutting it.
    (Redis is not paused here.)"""
    upstream = run_mock_upstream_in_thread(tokens_per_sec=10.0, output_tokens=80)  # an 8 s stream
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=_environment(OPENAI_KEY=KEY, OPENAI_BASE_URL=upstream.url, REDIS_URL=paused_redis.url,
                         REDIS_PREFIX=f"bounded-{uuid.uuid4().hex[:8]}:", CHECK_KEYS="false",
                         SHUTDOWN_GRACE_SEC="60"),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        workers = _children(process.pid)
        _stragglers.extend(workers)
        with httpx.Client(timeout=30) as client:
            request = client.build_request("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                                           json={**CHAT, "stream": True})
            response = client.send(request, stream=True)
            events = response.iter_lines()
            assert next(line for line in events if line.startswith("data: {"))
            client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
            worker = _serving(port, client_port, workers)
            target = worker if signalled == "worker" else process.pid
            os.kill(target, signal.SIGTERM)
            assert _wait_for(lambda: any(f"(process {worker})" in line for line in lines)), "the first was taken"
            os.kill(target, signal.SIGTERM)
            rest: list[str] = []
            with contextlib.suppress(httpx.HTTPError):  # a stream cut short ends with an error
                rest = list(events)
        assert "data: [DONE]" not in rest, "the worker did not wait for the stream it would otherwise have finished"
        assert _wait_for(lambda: not _alive(worker))
        if signalled == "supervisor":
            assert _wait_for(lambda: process.poll() is not None), "and the supervisor with its workers"
    finally:
        for pid in _stragglers:
            _kill_quietly(pid)
        _stragglers.clear()
        process.kill()
        process.wait(timeout=30)
        upstream.stop()


def _wait_for(condition: Callable[[], object], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _serving(server_port: int, client_port: int, workers: list[int]) -> int:
    """Which worker process holds the server side of the connection from `client_port` (from /proc)."""
    inode = ""
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if int(fields[1].split(":")[1], 16) == server_port and int(fields[2].split(":")[1], 16) == client_port:
            inode = fields[9]
    assert inode, "the connection is in /proc/net/tcp"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    raise AssertionError("no worker holds the connection")


def test_a_shutdown_step_deaf_to_its_cancellation_is_left_behind_with_one_line(monkeypatch, caplog):
    """The app's stop awaits each step through `within`: a step that swallows its cancellation (as a task caught
    in Python 3.11's `wait_for` race does) is given up on after its bound instead of holding the process."""
    import asyncio

    from gateway import shutdown

    monkeypatch.setattr(shutdown, "STOP_STEP_SEC", 0.2)
    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    async def main() -> None:
        await shutdown.within(asyncio.get_running_loop().time() + 60, "the deaf step", deaf())
        released.set()  # only now, so that `within` had to return on its own

    with caplog.at_level("WARNING", logger="poolgate"):
        asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert "shut-down: the deaf step did not finish within 0.2 s" in caplog.text
