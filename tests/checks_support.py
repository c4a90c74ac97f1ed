"""Helpers for the key-check and admin API tests: the admin API as an operator calls it, and running checks.

With the embedded store a gateway checks keys itself, in its own event loop, so
a test waits for what it expects to show in the admin API. With Redis, checks
are rq jobs: the test runs `poolgate worker --burst` (the real command, in a
subprocess) and then looks.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

ADMIN_KEY = "admin-key-for-tests-0123456789"


def admin(gateway: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN_KEY}", **kwargs.pop("headers", {})}
    return httpx.request(method, gateway.url + "/admin" + path, headers=headers, timeout=30, **kwargs)


def listed_keys(gateway: Any) -> list[dict[str, Any]]:
    response = admin(gateway, "GET", "/keys")
    assert response.status_code == 200, response.text
    return response.json()["keys"]  # type: ignore[no-any-return]


def key_view(gateway: Any, secret: str, organization: str | None = None) -> dict[str, Any]:
    """The admin view of the key whose masked form ends like `secret` (and in `organization`, if given)."""
    for key in listed_keys(gateway):
        if key["key"].endswith(secret[-4:]) and (organization is None or key["organization"] == organization):
            return key
    raise AssertionError(f"no key ending in {secret[-4:]}")


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_checks(
    gateway: Any, condition: Callable[[], Any], what: str = "the checks", worker_output: list[str] | None = None
) -> Any:
    """Let due and requested checks run, then wait for `condition` as the admin API shows it.

    With Redis, what the worker printed (its log) is appended to `worker_output`.
    """
    if not gateway.app.settings.store_is_embedded:
        done = run_burst_worker(gateway.app.settings)
        if worker_output is not None:
            worker_output.append(done.stdout + done.stderr)
    return wait_until(condition, what=what)


def run_burst_worker(settings: Any) -> subprocess.CompletedProcess[str]:
    """`poolgate worker --burst` with the gateway's own settings, from a directory without a `.env`."""
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[field.metadata["env"]] = str(value)
    with tempfile.TemporaryDirectory() as workdir:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "worker", "--burst"],
            env=env, cwd=workdir, capture_output=True, text=True, timeout=90,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done
