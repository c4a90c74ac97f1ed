"""A client that leaves, or stops reading, is not served any more, and its key is free again at once.

Upstream here is scripted (tests/scripted_upstream.py) so the test can see what
upstream saw: its connection closed by the gateway, within a bound, while it was
still answering.
"""

from __future__ import annotations

import asyncio
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from processes import wait_for
from scripted_upstream import STREAM_HEAD, Exchange, ScriptedUpstream, chunked, json_head

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there, how are you today?"}]}
GOOD_BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
)
GOOD_REPLY = json_head(200, len(GOOD_BODY), "connection: close\r\n") + GOOD_BODY
HANG_UP_BOUND_SEC = 5.0  # generous on a loaded 2-core machine; without the fix it never happens


def raw_request(gateway_url: str, payload: dict, *, receive_buffer: int | None = None) -> socket.socket:
    """A POST written on a raw socket, nothing read back: the client decides when (if ever) to read."""
    host, port = gateway_url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    body = json.dumps(payload).encode()
    sock.sendall(b"POST /proxy/openai/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    return sock


async def _never_answer(exchange: Exchange) -> None:
    await exchange.wait_gone(30)


async def _headers_then_nothing(exchange: Exchange) -> None:
    await exchange.write(json_head(200, 1000, "connection: close\r\n") + b'{"id":"chat')
    await exchange.wait_gone(30)


@pytest.mark.parametrize("phase", [_never_answer, _headers_then_nothing], ids=["waiting_for_headers", "reading_body"])
def test_a_client_that_hangs_up_on_a_plain_request_cancels_upstream_and_frees_its_key(start_gateway, phase):
    async def answer(exchange: Exchange) -> None:
        await (phase(exchange) if exchange.index == 0 else exchange.write(GOOD_REPLY))

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(OPENAI_BASE_URL=upstream.url, OPENAI_KEY="sk-only-key-0001", KEY_CONCURRENCY="1",
                                QUEUE_TIMEOUT_SEC="3")
        client = raw_request(gateway.url, CHAT)
        first = upstream.wait_for_request(0)
        client.close()  # the client gives up while upstream is still busy with its request
        assert first.gone.wait(HANG_UP_BOUND_SEC), "upstream's connection was closed soon after the client left"
        assert wait_for(lambda: gateway.key_status("0001")["inflight"] == 0, HANG_UP_BOUND_SEC)
        # Upstream had the prompt: it is counted, as poolgate's estimate, with no output.
        totals = gateway.usage_totals()
        assert totals["prompts"] == 1 and totals["estimated_prompts"] == 1
        assert totals["input_tokens"] > 0 and totals["output_tokens"] == 0

        again = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT, timeout=30)
        assert again.status_code == 200, "the only key was free for the next request"
        assert again.json()["choices"][0]["message"]["content"] == "hello"
    finally:
        upstream.stop()


def _big_delta() -> bytes:
    payload = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"content": "word " * 3000}, "finish_reason": None}]}
    return chunked(b"data: " + json.dumps(payload).encode() + b"\n\n")


async def _stream_until_gone(exchange: Exchange) -> None:
    """Far more than any socket buffers hold (up to 200 MB), as fast as the gateway takes it."""
    await exchange.write(STREAM_HEAD)
    event = _big_delta()
    for _ in range(200_000_000 // len(event)):
        if exchange.gone.is_set():
            return
        await exchange.write(event)
    await asyncio.sleep(0)


def test_a_client_that_stops_reading_a_stream_is_dropped_and_frees_its_key(start_gateway):
    async def answer(exchange: Exchange) -> None:
        await (_stream_until_gone(exchange) if exchange.index == 0 else exchange.write(GOOD_REPLY))

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(OPENAI_BASE_URL=upstream.url, OPENAI_KEY="sk-only-key-0001", KEY_CONCURRENCY="1",
                                QUEUE_TIMEOUT_SEC="3", STALLED_CLIENT_SEC="1")
        client = raw_request(gateway.url, {**CHAT, "stream": True}, receive_buffer=4096)
        try:
            first = upstream.wait_for_request(0)
            # It reads nothing. Once the buffers between are full, the gateway's writes stall; one
            # second later it must let go: upstream cut off, key returned.
            assert first.gone.wait(30), "upstream's connection was closed after the client stalled"
            assert wait_for(lambda: gateway.key_status("0001")["inflight"] == 0, HANG_UP_BOUND_SEC)
            again = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT, timeout=30)
            assert again.status_code == 200, "the only key was free for the next request"
        finally:
            client.close()
    finally:
        upstream.stop()


def test_a_key_freed_by_a_hang_up_on_one_gateway_serves_the_other_at_once(start_gateway, store_url):
    if not store_url:
        pytest.skip("the embedded store is one process's own; sharing a key needs REDIS_URL")

    async def answer(exchange: Exchange) -> None:
        await (_never_answer(exchange) if exchange.index == 0 else exchange.write(GOOD_REPLY))

    upstream = ScriptedUpstream(answer).start()
    try:
        env = {"OPENAI_BASE_URL": upstream.url, "OPENAI_KEY": "sk-only-key-0001", "KEY_CONCURRENCY": "1",
               "QUEUE_TIMEOUT_SEC": "10"}
        first, second = start_gateway(**env), start_gateway(**env)
        client = raw_request(first.url, CHAT)
        upstream.wait_for_request(0)
        with ThreadPoolExecutor(1) as pool:
            # The other gateway's request waits for the only key, held by the first gateway...
            waiting = pool.submit(httpx.post, second.url + "/proxy/openai/v1/chat/completions", json=CHAT,
                                  timeout=30)
            assert wait_for(lambda: second.run(second.app.queue_stats()).get("gpt-4o-mini", {})
                            .get("in_queue") == 1), "the second request is queued behind the held key"
            client.close()  # ...until the first gateway's client gives up
            served = waiting.result(timeout=HANG_UP_BOUND_SEC + 5)
        assert served.status_code == 200
        assert served.json()["choices"][0]["message"]["content"] == "hello"
        assert len(upstream.exchanges) == 2
    finally:
        upstream.stop()


def test_a_plain_reply_its_client_does_not_read_holds_no_key_and_is_counted_from_upstream(start_gateway):
    # uvicorn buffers a whole plain reply without waiting for the client, so this never stalls a write;
    # it pins down that the key and the count do not depend on the client reading.
    padding = b" " * 50_000_000  # far more than the socket buffers between hold
    big_body = GOOD_BODY[:-1] + b',"padding":"' + padding + b'"}'

    async def answer(exchange: Exchange) -> None:
        if exchange.index == 0:
            await exchange.write(json_head(200, len(big_body), "connection: close\r\n") + big_body)
        else:
            await exchange.write(GOOD_REPLY)

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(OPENAI_BASE_URL=upstream.url, OPENAI_KEY="sk-only-key-0001", KEY_CONCURRENCY="1",
                                QUEUE_TIMEOUT_SEC="3", STALLED_CLIENT_SEC="1")
        client = raw_request(gateway.url, CHAT, receive_buffer=4096)
        try:
            upstream.wait_for_request(0)
            assert wait_for(lambda: gateway.key_status("0001")["inflight"] == 0, 30), "the stalled reply let go"
            # Upstream answered whole: its own usage is what counts, not an estimate.
            assert gateway.usage_totals() == {"prompts": 1, "input_tokens": 3, "output_tokens": 1,
                                              "estimated_prompts": 0}
            again = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT, timeout=30)
            assert again.status_code == 200, "the only key was free for the next request"
        finally:
            client.close()
    finally:
        upstream.stop()
