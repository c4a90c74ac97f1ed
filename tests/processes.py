"""Ports and readiness for tests that run poolgate (or redis) as real processes on loopback."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis_server(binary: str, port: int, workdir: str, *, password: str = "") -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:`port` without persistence, once it accepts connections (10 s at most).

    With `password`, it asks every connection for it (`requirepass`), as managed Redis services do.
    """
    protection = ["--requirepass", password] if password else []
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir,
         *protection],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    raise AssertionError("redis-server did not start")


def wait_until_listening(url: str, proc: subprocess.Popen[str] | subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers at all; fails at once if `proc` exits first, and after 20 s regardless."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


class OwnRedis:
    """A redis-server of the test's own, which the test may kill and start again on the same port, empty."""

    def __init__(self, binary: str, workdir: Path, *, password: str = "") -> None:
        self._binary, self._workdir, self._password, self.port = binary, workdir, password, free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for_db(0)

    def url_for_db(self, db: int) -> str:
        credentials = f":{self._password}@" if self._password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self._process = start_redis_server(self._binary, self.port, str(self._workdir), password=self._password)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """True once `condition()` holds, polling it; False if it never did within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
