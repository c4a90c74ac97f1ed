"""The processes a benchmark runs against, started on loopback and stopped after.

Each is a real process, as it would run in production: redis-server, the fake
upstream (`poolgate mock-upstream`), `poolgate serve`, the bare relay, and
LiteLLM's proxy. The server under test is pinned to one core (`cpu`) and
everything else, the load generator included, to the other, so the core under
test does only the work being measured.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROXY_KEY = "sk-bench-proxy-key"  # what clients present to poolgate and LiteLLM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cores() -> tuple[int | None, int | None]:
    """(the core for the server under test, the core for everything else); None when there is only one."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def pin_this_process(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


@dataclass
class Service:
    """A started process and where it answers."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory_bytes(self) -> int:
        """Resident memory of the process and its children (uvicorn's workers), from /proc."""
        return sum(_rss(pid) for pid in _process_tree(self.process.pid))

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the process and its children have used so far, from /proc."""
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _process_tree(pid: int) -> list[int]:
    tree = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            tree += _process_tree(int(child))
    return tree


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return 0.0


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Services:
    """Starts services into one scratch folder and stops them all, newest first."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="poolgate-bench-"))
        self._running: list[Service] = []
        self.server_cpu, self.other_cpu = cores()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_all(self) -> None:
        while self._running:
            self._running.pop().stop()

    def stop(self, service: Service) -> None:
        service.stop()
        self._running.remove(service)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cpu: int | None = None,
              ready_path: str | None = "/health", ready_timeout: float = 60, port: int | None = None,
              cwd: Path = ROOT) -> Service:
        port = port or free_port()
        argv = [part.replace("{port}", str(port)) for part in argv]
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=(lambda: pin_this_process(cpu)) if cpu is not None else None,
            )
        service = Service(name, process, port, log)
        self._running.append(service)
        if ready_path is None:
            _wait_until(service, ready_timeout, "listen", lambda: _listening(service.port))
        else:
            _wait_until(service, ready_timeout, f"answer {ready_path}", lambda: _answers(service.url + ready_path))
        return service

    # --- the services ---------------------------------------------------------

    def redis(self) -> Service:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("needs redis-server (apt-get install redis-server)")
        return self.start("redis", [binary, "--port", "{port}", "--save", "", "--appendonly", "no",
                                    "--dir", str(self.workdir)], cpu=self.other_cpu, ready_path=None)

    def mock_upstream(self, *, tokens_per_sec: float = 0, output_tokens: int = 16, rpm: int = 0) -> Service:
        return self.start("mock-upstream", [
            sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", "{port}",
            "--tokens-per-sec", str(tokens_per_sec), "--output-tokens", str(output_tokens), "--rpm", str(rpm),
        ], cpu=self.other_cpu, ready_path="/_mock/requests")

    def poolgate(self, redis: Service, upstream: Service, keys: list[str], *, workers: int = 1,
                 pinned: bool = True, **settings: str) -> Service:
        env = {
            "OPENAI_KEY": ",".join(keys), "OPENAI_BASE_URL": upstream.url,
            "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "BIND_ADDRESS": "127.0.0.1",
            "GATEKEEPER": "proxy_key", "PROXY_KEY": PROXY_KEY, "LOG_LEVEL": "warning",
            **settings,
        }
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--port", "{port}", "--workers", str(workers)]
        name = "poolgate" if workers == 1 else f"poolgate-{workers}-workers"
        # run from the scratch folder so that a developer's .env cannot change what is measured
        return self.start(name, argv, env=env, cpu=self.server_cpu if pinned else None, cwd=self.workdir)

    def bare_relay(self, upstream: Service, key: str) -> Service:
        argv = [sys.executable, "-m", "uvicorn", "bench.bare_relay:app", "--host", "127.0.0.1", "--port", "{port}",
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        env = {"BARE_RELAY_UPSTREAM": upstream.url, "BARE_RELAY_KEY": key}
        return self.start("bare-relay", argv, env=env, cpu=self.server_cpu, ready_path="/health")

    def litellm(self, argv: list[str], env: dict[str, str], port: int, ready_path: str) -> Service:
        return self.start("litellm", argv, env=env, cpu=self.server_cpu, ready_path=ready_path,
                          ready_timeout=180, port=port)


def _wait_until(service: Service, timeout: float, what: str, ready: Callable[[], bool]) -> None:
    """Until `ready()`; fails at once if the process exits first, and after `timeout` regardless."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.process.returncode}: {_tail(service.log)}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not {what} within {timeout:.0f} s: {_tail(service.log)}")


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code < 500
    return False


def _tail(log: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"
