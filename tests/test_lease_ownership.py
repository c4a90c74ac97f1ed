"""A key lease is returned exactly once, whatever breaks while its reply is relayed.

The upstream here is a raw TCP server so it can do what no well-behaved HTTP
server does: promise a 1000-byte body, send 10 bytes and hang up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest
from scripted_upstream import Exchange, ScriptedUpstream, json_head

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GOOD_BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)


class BreakingUpstream:
    """Its first chat completion breaks off mid-body; every later one is answered properly."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "the breaking upstream did not start"

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            self.requests += 1
            if self.requests == 1:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
                    + b'{"id":"chat'
                )
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    + f"content-length: {len(GOOD_BODY)}\r\n\r\n".encode()
                    + GOOD_BODY
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def breaking_upstream() -> Iterator[BreakingUpstream]:
    server = BreakingUpstream()
    server.start()
    yield server
    server.stop()


def test_a_body_broken_off_midway_is_a_502_and_the_key_is_free_again(start_gateway, breaking_upstream):
    gateway = start_gateway(
        OPENAI_BASE_URL=breaking_upstream.url,
        OPENAI_KEY="sk-only-key-0001",
        KEY_CONCURRENCY="1",
        QUEUE_TIMEOUT_SEC="3",
    )
    url = gateway.url + "/proxy/openai/v1/chat/completions"

    broken = httpx.post(url, json=CHAT, timeout=30)
    assert broken.status_code == 502
    error = broken.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_error"
    assert "sk-only" not in broken.text and "Traceback" not in broken.text
    assert gateway.key_status("0001")["inflight"] == 0, "the broken reply's lease was given back"

    again = httpx.post(url, json=CHAT, timeout=30)
    assert again.status_code == 200, "the only key was free for the next request"
    assert again.json()["choices"][0]["message"]["content"] == "hello"
    assert breaking_upstream.requests == 2
    assert gateway.key_status("0001")["inflight"] == 0


GOOD_REPLY = json_head(200, len(GOOD_BODY), "connection: close\r\n") + GOOD_BODY


async def _error_body_broken_off(exchange: Exchange) -> None:
    """A 500 whose error body upstream breaks off: reading why it failed fails too."""
    await exchange.write(json_head(500, 1000) + b'{"error":')


def test_an_attempt_that_fails_unexpectedly_gives_its_key_back_at_once(start_gateway):
    async def answer(exchange: Exchange) -> None:
        await (_error_body_broken_off(exchange) if exchange.index == 0 else exchange.write(GOOD_REPLY))

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(
            OPENAI_BASE_URL=upstream.url, OPENAI_KEY="sk-only-key-0001", KEY_CONCURRENCY="1",
            QUEUE_TIMEOUT_SEC="3", UPSTREAM_RETRIES="0",
        )
        url = gateway.url + "/proxy/openai/v1/chat/completions"
        failed = httpx.post(url, json=CHAT, timeout=30)
        assert failed.status_code == 502
        assert failed.json()["error"]["code"] == "upstream_error"
        assert "sk-only" not in failed.text and "Traceback" not in failed.text
        assert gateway.key_status("0001")["inflight"] == 0, "the failed attempt's lease was given back"

        # Well inside the lease TTL (60 s) and the queue timeout (3 s): the only key is free now.
        again = httpx.post(url, json=CHAT, timeout=30)
        assert again.status_code == 200
        assert again.json()["choices"][0]["message"]["content"] == "hello"
        assert len(upstream.exchanges) == 2
    finally:
        upstream.stop()


@pytest.mark.parametrize("headers", [
    {"x-ratelimit-remaining-requests": "1e999", "x-ratelimit-reset-requests": "1s"},
    {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1e999"},
    {"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "inf"},
], ids=["remaining", "reset", "tokens_reset"])
def test_rate_limit_headers_no_arithmetic_survives_do_not_break_a_reply(start_gateway, headers):
    async def answer(exchange: Exchange) -> None:
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "connection: close\r\n"
        await exchange.write(json_head(200, len(GOOD_BODY), extra) + GOOD_BODY)

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(OPENAI_BASE_URL=upstream.url, OPENAI_KEY="sk-only-key-0001", KEY_CONCURRENCY="1")
        for _ in range(2):  # and the key stays usable
            reply = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT, timeout=30)
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"] == "hello"
    finally:
        upstream.stop()
