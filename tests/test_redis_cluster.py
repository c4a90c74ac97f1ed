"""poolgate on a real Redis Cluster: three `redis-server --cluster-enabled yes` masters, made one with
`redis-cli --cluster create`, two gateways sharing it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from conftest import REQUIRE_REDIS

from gateway.settings import Settings

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Cluster:
    url: str
    ports: list[int]
    nodes: dict[int, subprocess.Popen[bytes]]


def _start_cluster(replicas: int) -> Iterator[Cluster]:
    """3 masters (each with `replicas` replicas) on loopback, made one cluster by `redis-cli --cluster create`."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        if REQUIRE_REDIS:
            pytest.fail("POOLGATE_REQUIRE_REDIS=1 but redis-server / redis-cli are not installed")
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    workdir = tempfile.mkdtemp(prefix="poolgate-cluster-")
    ports = [_cluster_port() for _ in range(3 * (1 + replicas))]
    nodes = {
        port: subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "1000",
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for port in ports
    }
    try:
        for port in ports:
            _until(lambda p=port: _cli(p, "ping") == "PONG", f"node {port} did not start")
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", str(replicas),
             "--cluster-yes"], capture_output=True, text=True, timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        _until(lambda: all("cluster_state:ok" in _cli(p, "cluster", "info") for p in ports),
               "the cluster did not become ready")
        yield Cluster(f"redis://127.0.0.1:{ports[0]}", ports, nodes)
    finally:
        for node in nodes.values():
            node.terminate()
        for node in nodes.values():
            node.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[str]:
    for cluster in _start_cluster(replicas=0):
        yield cluster.url


@pytest.fixture
def cluster_with_replicas() -> Iterator[Cluster]:
    yield from _start_cluster(replicas=1)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and a port too."""
    import random
    import socket

    while True:
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _cli(port: int, *command: str) -> str:
    result = subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(port), *command],
                            capture_output=True, text=True, timeout=10)
    return result.stdout.strip()


def _until(condition, failure: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(failure)


def test_the_prefix_gets_a_hash_tag_on_a_cluster_only():
    assert Settings.from_env({"REDIS_URL": "redis://x:1", "REDIS_CLUSTER": "true"}, env_file=None).redis_prefix \
        == "{poolgate}:"
    assert Settings.from_env({"REDIS_URL": "redis://x:1", "REDIS_CLUSTER": "true", "REDIS_PREFIX": "{mine}:"},
                             env_file=None).redis_prefix == "{mine}:"
    assert Settings.from_env({"REDIS_URL": "redis://x:1"}, env_file=None).redis_prefix == "poolgate:", \
        "a single Redis keeps its keys' names"


def test_two_gateways_share_a_redis_cluster(redis_cluster, upstream):
    import uuid

    from conftest import _serve_in_thread

    from gateway.app import PoolgateApp

    env = {"REDIS_URL": redis_cluster, "REDIS_CLUSTER": "true", "REDIS_PREFIX": f"cl{uuid.uuid4().hex[:6]}:",
           "OPENAI_KEY": "sk-good-Cl01Aa,sk-good-Cl02Bb", "ANTHROPIC_KEY": "sk-ant-good-Cl03Cc",
           "OPENAI_BASE_URL": upstream.url, "ANTHROPIC_BASE_URL": upstream.url, "CHECK_KEYS": "false"}
    stops = []
    try:
        urls = []
        for _ in range(2):
            url, _loop, stop = _serve_in_thread(PoolgateApp(Settings.from_env(env, env_file=None)))
            stops.append(stop)
            urls.append(url)
        for url in urls:
            for _ in range(3):
                assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
            with httpx.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": True},
                              timeout=30) as streamed:
                assert streamed.status_code == 200
                assert "data: [DONE]" in streamed.read().decode()
            claude = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(url + "/v1/messages", json=claude, timeout=30).status_code == 200
        for url in urls:
            status = httpx.get(url + "/status", timeout=30).json()
            assert status["prompts"] == 10, "both gateways account into the one cluster"
            assert status["keys"]["openai"]["active"] == 2
            assert httpx.get(url + "/health").json()["status"] == "ok"
    finally:
        for stop in stops:
            stop()


def test_a_cluster_without_redis_cluster_set_is_one_clear_line(redis_cluster):
    import os
    import sys

    from gateway.cli import render_config_reference

    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    env = {k: v for k, v in os.environ.items() if k not in names}
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "serve"], env={**env, "REDIS_URL": redis_cluster},
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("set REDIS_CLUSTER=true, so poolgate's keys share one slot)")
    worker = subprocess.run([sys.executable, "-m", "gateway.cli", "worker"],
                            env={**env, "REDIS_URL": redis_cluster, "REDIS_CLUSTER": "true"},
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert worker.returncode == 2 and "`poolgate worker` cannot run with REDIS_CLUSTER" in worker.stderr


def test_poolgate_serve_runs_on_a_cluster_from_the_command_line(redis_cluster, upstream, tmp_path):
    import os
    import sys

    from processes import free_port, wait_until_listening

    from gateway.cli import render_config_reference

    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in names}, "REDIS_URL": redis_cluster,
           "REDIS_CLUSTER": "true", "OPENAI_KEY": "sk-good-Cl04Dd", "OPENAI_BASE_URL": upstream.url,
           "PORT": str(port), "BIND_ADDRESS": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        assert httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
        # Key checks run in the gateway itself on a cluster: upstream sees the key checked, with no worker.
        _until(lambda: any(r["path"].startswith("/v1/models") and r["key"] == "sk-good-Cl04Dd"
                           for r in upstream.requests), "the gateway did not check its key")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stderr and "MOVED" not in stderr


def test_a_gateway_follows_its_slot_to_the_replica_that_takes_over(cluster_with_replicas, upstream):
    import uuid

    from conftest import _serve_in_thread

    from gateway.app import PoolgateApp

    prefix = f"{{fo{uuid.uuid4().hex[:6]}}}:"
    env = {"REDIS_URL": cluster_with_replicas.url, "REDIS_CLUSTER": "true", "REDIS_PREFIX": prefix,
           "OPENAI_KEY": "sk-good-Cl05Ee", "OPENAI_BASE_URL": upstream.url, "CHECK_KEYS": "false"}
    url, _loop, stop = _serve_in_thread(PoolgateApp(Settings.from_env(env, env_file=None)))
    try:
        for _ in range(3):
            assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 200
        survivor = cluster_with_replicas.ports[-1]
        slot = int(_cli(survivor, "cluster", "keyslot", prefix))

        def master_of_slot() -> int:
            for line in _cli(survivor, "cluster", "nodes").splitlines():
                fields = line.split()
                if "master" in fields[2] and "fail" not in fields[2] and any(
                        _covers(r, slot) for r in fields[8:]):
                    return int(fields[1].split(":")[1].split("@")[0])
            return 0

        master = master_of_slot()
        replica = next(int(line.split()[1].split(":")[1].split("@")[0])
                       for line in _cli(survivor, "cluster", "nodes").splitlines()
                       if "slave" in line.split()[2] and line.split()[3] == _cli(master, "cluster", "myid"))
        # Acknowledged writes have reached the replica (replication is asynchronous) before the master dies.
        def caught_up() -> bool:
            info = dict(line.split(":", 1) for line in _cli(master, "info", "replication").splitlines()
                        if ":" in line)
            return f"offset={info.get('master_repl_offset')}," in info.get("slave0", "")

        _until(caught_up, "the replica lags")
        cluster_with_replicas.nodes[master].kill()
        _until(lambda: master_of_slot() == replica, "the replica was not promoted", seconds=60)

        def serves() -> bool:
            try:
                return httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
            except httpx.HTTPError:
                return False

        _until(serves, "the gateway did not follow its slot to the new master", seconds=60)
        assert httpx.get(url + "/status", timeout=10).json()["prompts"] == 4
    finally:
        stop()


def _covers(slot_range: str, slot: int) -> bool:
    if slot_range.startswith("["):
        return False  # a slot being migrated
    low, _, high = slot_range.partition("-")
    return int(low) <= slot <= int(high or low)
