"""Test harness: a fake upstream, a real or embedded store, and gateways running on loopback.

Gateways run in-process (uvicorn on its own event loop in a thread) so tests can
talk to them with the official SDKs over real HTTP, and still read the key
pool's state as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from processes import free_port, start_redis_server

from fake_upstream import run_mock_upstream_in_thread
from gateway.app import PoolgateApp
from gateway.settings import Settings

REQUIRE_REDIS = os.environ.get("POOLGATE_REQUIRE_REDIS") == "1"


def _session_redis(workdir_prefix: str, password: str = "") -> Iterator[tuple[int, str] | None]:
    """A redis-server of the session's own: its (port, password), or None when the machine has none."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail("POOLGATE_REQUIRE_REDIS=1 but redis-server is not installed")
        yield None
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix=workdir_prefix)
    proc = start_redis_server(binary, port, workdir, password=password)
    yield port, password
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str | None]:
    """A real redis-server for the session, or None when the machine has none (CI always has one)."""
    for server in _session_redis("poolgate-redis-"):
        yield None if server is None else f"redis://127.0.0.1:{server[0]}/0"


REDIS_PASSWORD = "poolgate-test-s3cret"


@pytest.fixture(scope="session")
def guarded_redis_server() -> Iterator[str | None]:
    """A real redis-server that asks for a password, as every managed Redis does: its URL without a database
    (`redis://:password@127.0.0.1:port`), or None when the machine has none."""
    for server in _session_redis("poolgate-guarded-redis-", REDIS_PASSWORD):
        yield None if server is None else f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server[0]}"


@pytest.fixture(params=["embedded", "redis"])
def store_url(request: pytest.FixtureRequest, redis_server: str | None) -> str:
    """Runs the test once on the embedded store and once on a real redis-server."""
    if request.param == "embedded":
        return ""
    if redis_server is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this variant")
    return redis_server


@pytest.fixture
def upstream() -> Iterator[Any]:
    handle = run_mock_upstream_in_thread()
    yield handle
    handle.stop()


@dataclass
class RunningGateway:
    url: str
    app: PoolgateApp
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the gateway's own loop (where its store lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def keys(self) -> list[dict[str, Any]]:
        assert self.app.pool is not None
        return self.run(self.app.pool.describe_keys())  # type: ignore[no-any-return]

    def key_status(self, secret_fragment: str) -> dict[str, Any]:
        """The state of the key whose masked form ends like the secret does."""
        for key in self.keys():
            if key["key"].endswith(secret_fragment[-4:]):
                return key
        raise AssertionError(f"no key ending in {secret_fragment[-4:]}")

    def usage_totals(self) -> dict[str, int]:
        assert self.app.pool is not None
        return self.run(self.app.pool.usage_totals())  # type: ignore[no-any-return]


def _serve_in_thread(app: Any) -> tuple[str, asyncio.AbstractEventLoop, Callable[[], None]]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, http="httptools", lifespan="on")
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()

    return f"http://127.0.0.1:{port}", loop, stop


@pytest.fixture
def start_gateway(upstream: Any, store_url: str) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways against the fake upstream; env names are the real settings' names."""
    stops: list[Callable[[], None]] = []
    prefix = f"poolgate-test-{uuid.uuid4().hex[:8]}:"

    def start(**env: str) -> RunningGateway:
        values = {
            "OPENAI_BASE_URL": upstream.url,
            "ANTHROPIC_BASE_URL": upstream.url,
            "REDIS_URL": store_url,
            "REDIS_PREFIX": prefix,
            "UPSTREAM_RETRIES": "1",
            # Key checks call upstream on their own; tests of them turn them on, so elsewhere the
            # fake upstream records only what clients caused.
            "CHECK_KEYS": "false",
            "USAGE_DB_PATH": os.path.join(tempfile.gettempdir(), f"{prefix.rstrip(':')}-usage.sqlite3"),  # not the cwd
            **env,
        }
        app = PoolgateApp(Settings.from_env(values, env_file=None))
        url, loop, stop = _serve_in_thread(app)
        stops.append(stop)
        return RunningGateway(url, app, loop)

    yield start
    for stop in reversed(stops):
        stop()
