"""A client's address is its identity unless a trusted proxy names another; a header alone claims nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
from processes import free_port, wait_until_listening
from test_settings_and_cli import _all_setting_names

ADMIN_KEY = "admin-forwarded-test"
# Linux routes all of 127.0.0.0/8 to loopback: a client bound to 127.0.0.2 reaches a server on 0.0.0.0
# from an address that is not the one a local reverse proxy uses (127.0.0.1), i.e. like a direct client.
DIRECT_CLIENT = "127.0.0.2"


@contextlib.contextmanager
def served(env: dict[str, str]) -> Iterator[str]:
    """`poolgate serve` as a real process on all addresses; yields a URL to reach it on loopback."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k not in _all_setting_names() and k not in ("SPACE_ID", "RENDER")}
    env = {**clean, "PORT": str(port), "BIND_ADDRESS": "0.0.0.0", "ADMIN_KEY": ADMIN_KEY,
           "ADMIN_LOCKOUT_FAILURES": "2", "CHECK_KEYS": "false", **env}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd="/",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def admin_keys(url: str, key: str, forwarded_for: str) -> int:
    transport = httpx.HTTPTransport(local_address=DIRECT_CLIENT)
    with httpx.Client(transport=transport, timeout=20) as client:
        reply = client.get(url + "/admin/keys", headers={"authorization": f"Bearer {key}",
                                                         "x-forwarded-for": forwarded_for})
    return reply.status_code


def test_a_direct_client_cannot_dodge_the_admin_lockout_with_x_forwarded_for() -> None:
    with served({}) as url:
        guesses = [admin_keys(url, "wrong", f"203.0.113.{n}") for n in (1, 2)]
        right_key = admin_keys(url, ADMIN_KEY, "203.0.113.3")

    assert guesses == [401, 401]
    assert right_key == 429, "both failures were counted against the client's own address"


def test_on_a_huggingface_space_the_platform_proxy_is_trusted() -> None:
    with served({"SPACE_ID": "someone/poolgate"}) as url:
        guesses = [admin_keys(url, "wrong", "203.0.113.1") for _ in range(2)]
        someone_else = admin_keys(url, ADMIN_KEY, "198.51.100.7")

    assert guesses == [401, 401]
    assert someone_else == 200, "behind the Space's proxy each visitor is the address it names"


def test_on_render_the_platform_proxy_is_trusted() -> None:
    with served({"RENDER": "true"}) as url:
        guesses = [admin_keys(url, "wrong", "203.0.113.1") for _ in range(2)]
        someone_else = admin_keys(url, ADMIN_KEY, "198.51.100.7")

    assert guesses == [401, 401]
    assert someone_else == 200


def test_a_proxy_named_in_forwarded_allow_ips_names_the_client() -> None:
    with served({"FORWARDED_ALLOW_IPS": "127.0.0.0/8"}) as url:
        guesses = [admin_keys(url, "wrong", "203.0.113.1") for _ in range(2)]
        someone_else = admin_keys(url, ADMIN_KEY, "198.51.100.7")
        the_guesser = admin_keys(url, ADMIN_KEY, "203.0.113.1")

    assert guesses == [401, 401]
    assert someone_else == 200
    assert the_guesser == 429
