"""poolgate behind Redis Sentinel: a master, a replica and a sentinel on loopback; the master is killed,
the sentinel promotes the replica, and the gateway carries on without a restart."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REQUIRE_REDIS, _serve_in_thread
from processes import free_port

from gateway.app import PoolgateApp
from gateway.settings import Settings

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _start(server: str, workdir: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([server, *args, "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cli(port: int, *command: str) -> str:
    cli = shutil.which("redis-cli") or "redis-cli"
    return subprocess.run([cli, "-p", str(port), *command], capture_output=True, text=True, timeout=10).stdout.strip()


def _until(condition, failure: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(failure)


@pytest.fixture
def sentinel_setup() -> Iterator[dict[str, object]]:
    server = shutil.which("redis-server")
    if server is None or shutil.which("redis-cli") is None:
        if REQUIRE_REDIS:
            pytest.fail("POOLGATE_REQUIRE_REDIS=1 but redis-server / redis-cli are not installed")
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    workdir = tempfile.mkdtemp(prefix="poolgate-sentinel-")
    master, replica, sentinel = free_port(), free_port(), free_port()
    common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    processes = {"master": _start(server, workdir, "--port", str(master), *common)}
    _until(lambda: _cli(master, "ping") == "PONG", "the master did not start")
    processes["replica"] = _start(server, workdir, "--port", str(replica), "--replicaof", "127.0.0.1", str(master),
                                  *common)
    _until(lambda: "master_link_status:up" in _cli(replica, "info", "replication"), "the replica did not sync")
    config = Path(workdir) / "sentinel.conf"
    config.write_text(
        f"port {sentinel}\nbind 127.0.0.1\n"
        f"sentinel monitor pool 127.0.0.1 {master} 1\n"
        "sentinel down-after-milliseconds pool 1000\nsentinel failover-timeout pool 5000\n"
    )
    processes["sentinel"] = _start(server, workdir, str(config), "--sentinel")
    _until(lambda: _cli(sentinel, "ping") == "PONG", "the sentinel did not start")
    try:
        yield {"master": master, "replica": replica, "sentinel": sentinel, "processes": processes}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_gateway_carries_on_after_the_master_is_killed(sentinel_setup, upstream):
    env = {"REDIS_URL": "redis://pool/0", "REDIS_SENTINELS": f"127.0.0.1:{sentinel_setup['sentinel']}",
           "REDIS_PREFIX": f"sn{uuid.uuid4().hex[:6]}:", "OPENAI_KEY": "sk-good-Sn01Aa",
           "OPENAI_BASE_URL": upstream.url, "CHECK_KEYS": "false"}
    url, _loop, stop = _serve_in_thread(PoolgateApp(Settings.from_env(env, env_file=None)))
    try:
        for _ in range(3):
            assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
        replica = sentinel_setup["replica"]
        # What was acknowledged has reached the replica before the master dies (Redis replicates asynchronously).
        _until(lambda: _cli(replica, "hget", f"{env['REDIS_PREFIX']}usage:total", "prompts") == "3",
               "the replica did not catch up")
        sentinel_setup["processes"]["master"].kill()  # type: ignore[index]
        _until(lambda: _cli(sentinel_setup["sentinel"], "sentinel", "get-master-addr-by-name", "pool")  # type: ignore[arg-type]
               .splitlines()[-1:] == [str(replica)], "the sentinel did not promote the replica")
        served = []

        def serves_again() -> bool:
            try:
                reply = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=10)
            except httpx.HTTPError:
                return False
            served.append(reply.status_code)
            return reply.status_code == 200

        _until(serves_again, "the gateway did not recover after the failover")
        status = httpx.get(url + "/status", timeout=10).json()
        assert status["prompts"] == 4, "the three acknowledged before the failover, and the one after"
    finally:
        stop()


def _clean_env() -> dict[str, str]:
    import os

    from gateway.cli import render_config_reference

    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {k: v for k, v in os.environ.items() if k not in names}


def test_poolgate_serve_finds_the_master_through_the_sentinels(sentinel_setup, upstream, tmp_path):
    import sys

    from processes import wait_until_listening

    port = free_port()
    env = {**_clean_env(), "REDIS_URL": "redis://pool/0", "REDIS_SENTINELS": f"127.0.0.1:{sentinel_setup['sentinel']}",
           "OPENAI_KEY": "sk-good-Sn02Bb", "OPENAI_BASE_URL": upstream.url, "PORT": str(port),
           "BIND_ADDRESS": "127.0.0.1", "REDIS_PREFIX": f"sn{uuid.uuid4().hex[:6]}:"}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["status"] == "ok" and health["store"] == "redis"
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr


def test_unreachable_sentinels_are_one_line_without_the_password(tmp_path):
    import sys

    env = {**_clean_env(), "REDIS_URL": "redis://:sn-pw-Sn03@pool/0", "REDIS_SENTINELS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot use REDIS_URL" in lines[0] and "REDIS_SENTINELS" in lines[0]
    assert "sn-pw-Sn03" not in result.stderr
