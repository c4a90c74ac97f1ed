"""Slow or silent clients cannot hold the server's sockets: header and body timeouts, a cap per address.

Against a real `poolgate serve` with short limits. A client bound to 127.0.0.2 is
not the loopback proxy poolgate trusts by default (127.0.0.1), so it is limited
like any direct client.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from processes import free_port, wait_until_listening
from test_settings_and_cli import _all_setting_names

CLIENT = "127.0.0.2"
# Each test waits at most this long for the server to drop a connection it should drop (limits are ~1 s).
BOUND_SEC = 10.0


@contextlib.contextmanager
def served(**env: str) -> Iterator[int]:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k not in _all_setting_names()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env={**clean, "PORT": str(port), "BIND_ADDRESS": "0.0.0.0", "CHECK_KEYS": "false",
             "CLIENT_HEADER_TIMEOUT_SEC": "1", "CLIENT_BODY_TIMEOUT_SEC": "1", **env},
        cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND_SEC, source_address=(CLIENT, 0))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server ends the connection (EOF or reset); False if it is still open after BOUND_SEC."""
    sock.settimeout(BOUND_SEC)
    try:
        while sock.recv(4096):
            pass  # a 408 or similar before the close is fine
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def health_answers(port: int) -> bool:
    with connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply.startswith(b"HTTP/1.1 200")


def test_a_connection_that_sends_nothing_is_closed() -> None:
    with served() as port, connect(port) as silent:
        assert closed_by_server(silent)


def test_a_connection_that_trickles_its_headers_is_closed() -> None:
    with served() as port, connect(port) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.1 s: it never finishes within the 1 s allowed
            try:
                slow.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
        assert closed or closed_by_server(slow)


def test_a_request_whose_body_stops_coming_is_closed() -> None:
    with served() as port, connect(port) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\":")
        assert closed_by_server(slow)


def test_connections_beyond_the_cap_per_address_are_refused_and_others_still_served() -> None:
    with served(MAX_CONNECTIONS_PER_ADDRESS="5", CLIENT_HEADER_TIMEOUT_SEC="60") as port:
        held = [connect(port) for _ in range(5)]
        try:
            with connect(port) as extra:
                assert closed_by_server(extra)
            with socket.create_connection(("127.0.0.1", port), timeout=BOUND_SEC) as from_the_proxy:
                from_the_proxy.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert from_the_proxy.recv(4096).startswith(b"HTTP/1.1 200"), "the trusted proxy is not capped"
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + BOUND_SEC
        while not health_answers(port):  # the server notices the closed sockets and frees their places
            assert time.monotonic() < deadline, "closed connections never gave their places back"


def test_a_normal_request_is_not_affected() -> None:
    with served() as port:
        assert health_answers(port)
