"""A translated stream lives like a native one: heartbeats while it waits in line, cancelled when its client leaves."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from processes import wait_for
from scripted_upstream import STREAM_HEAD, Exchange, ScriptedUpstream, chunked

from fake_upstream.fake_text import completion_text

CLAUDE_ASK = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return chunked(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())


async def _claude_writes_two_hundred_words_slowly(exchange: Exchange) -> None:
    await exchange.write(STREAM_HEAD)
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}
    await exchange.write(_event("message_start", {"type": "message_start", "message": message}))
    await exchange.write(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}}))
    for n in range(200):
        await exchange.write(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                            "delta": {"type": "text_delta", "text": f" w{n}"}}))
        if await exchange.wait_gone(0.05):
            return
    await exchange.write(b"0\r\n\r\n")


def test_a_client_that_hangs_up_on_a_translated_stream_cancels_upstream_and_frees_its_key(start_gateway: Any) -> None:
    upstream = ScriptedUpstream(_claude_writes_two_hundred_words_slowly).start()
    try:
        gateway = start_gateway(ANTHROPIC_KEY="sk-ant-translate-gone-0001", ANTHROPIC_BASE_URL=upstream.url)
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**CLAUDE_ASK, "stream": True},
                          timeout=30) as reply:
            assert reply.status_code == 200
            lines = reply.iter_lines()  # kept referenced: dropping the iterator closes the connection
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["object"] == "chat.completion.chunk"
            streaming = upstream.wait_for_request(0)
            assert json.loads(streaming.body)["stream"] is True  # upstream was asked in Anthropic's format
            assert not streaming.gone.is_set()
            left_at = time.monotonic()
        assert streaming.gone.wait(5), "upstream saw its connection closed"
        assert streaming.gone_at is not None and streaming.gone_at - left_at < 5
        assert wait_for(lambda: gateway.key_status("0001")["inflight"] == 0, timeout=5)
        assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1, timeout=5)
    finally:
        upstream.stop()


def test_a_queued_translated_stream_gets_heartbeats_and_the_sdk_does_not_mind(start_gateway: Any,
                                                                               upstream: Any) -> None:
    gateway = start_gateway(ANTHROPIC_KEY="sk-ant-slow-delay1000-0001", KEY_CONCURRENCY="1",
                            HEARTBEAT_INTERVAL_SEC="0.2", USER_CONCURRENCY_LIMIT="5")

    def busy() -> httpx.Response:
        return httpx.post(gateway.url + "/v1/chat/completions", json=CLAUDE_ASK,
                          headers={"x-forwarded-for": "10.0.0.1"}, timeout=60)

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(busy)
        assert wait_for(lambda: len(upstream.requests) >= 1), "upstream never saw the first request"
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**CLAUDE_ASK, "stream": True},
                          headers={"x-forwarded-for": "10.0.0.2"}, timeout=30) as reply:
            assert reply.status_code == 200
            text = b"".join(reply.iter_raw())
        assert text.count(b": poolgate: waiting for a key") >= 2
        served = text.rsplit(b": poolgate: cost=", 1)[0]  # the stream's money comes after its last event
        assert b'"chat.completion.chunk"' in text and served.endswith(b"data: [DONE]\n\n")
        assert first.result().status_code == 200

        again = pool.submit(busy)
        assert wait_for(lambda: len(upstream.requests) >= 3), "upstream never saw the busy request again"
        stream = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            **CLAUDE_ASK, stream=True, extra_headers={"x-forwarded-for": "10.0.0.3"})  # type: ignore[call-overload]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == completion_text(16)
        assert again.result().status_code == 200


async def _claude_breaks_off_after_a_word(exchange: Exchange) -> None:
    await exchange.write(STREAM_HEAD)
    message = {"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1}}
    await exchange.write(_event("message_start", {"type": "message_start", "message": message}))
    await exchange.write(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                        "delta": {"type": "text_delta", "text": "Hello"}}))
    exchange.writer.close()  # no message_stop, no end of the chunked body: the connection just drops


def test_a_translated_stream_upstream_breaks_off_ends_in_an_error_the_sdk_raises(start_gateway: Any) -> None:
    upstream = ScriptedUpstream(_claude_breaks_off_after_a_word).start()
    try:
        gateway = start_gateway(ANTHROPIC_KEY="sk-ant-translate-cut-0001", ANTHROPIC_BASE_URL=upstream.url)
        stream = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            **CLAUDE_ASK, stream=True)  # type: ignore[call-overload]
        got = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
        assert "".join(got) == "Hello"
        assert raised.value.message == "The upstream stream ended before it was complete."
    finally:
        upstream.stop()


def test_an_upstream_error_after_a_queued_translated_stream_began_is_an_openai_error_event(start_gateway: Any,
                                                                                           upstream: Any) -> None:
    gateway = start_gateway(ANTHROPIC_KEY="sk-ant-slow-delay800-0002", KEY_CONCURRENCY="1",
                            HEARTBEAT_INTERVAL_SEC="0.2", USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(httpx.post, gateway.url + "/v1/chat/completions", json=CLAUDE_ASK,
                           headers={"x-forwarded-for": "10.0.0.1"}, timeout=60)
        assert wait_for(lambda: len(upstream.requests) >= 1), "upstream never saw the first request"
        with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                          json={**CLAUDE_ASK, "model": "claude-sonnet-9-nope", "stream": True},
                          headers={"x-forwarded-for": "10.0.0.2"}, timeout=30) as reply:
            assert reply.status_code == 200  # its headers went out while it waited in line
            text = b"".join(reply.iter_raw()).decode()
        assert busy.result().status_code == 200
    assert ": poolgate: waiting for a key" in text
    last = text.strip().split("\n\n")[-1]
    assert json.loads(last.removeprefix("data: ")) == {"error": {
        "message": "model: claude-sonnet-9-nope", "type": "invalid_request_error", "param": None,
        "code": "not_found_error"}}
