"""On the Responses API an error inside a stream arrives as that API's own events, which the SDK understands."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
from processes import wait_for
from scripted_upstream import STREAM_HEAD, Exchange, ScriptedUpstream, chunked

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def hold_the_only_key(gateway: Any, upstream: Any, pool: ThreadPoolExecutor) -> Any:
    """A request that holds the one key (KEY_CONCURRENCY=1) from when upstream receives it."""
    holder = pool.submit(httpx.post, gateway.url + "/v1/chat/completions", json=CHAT, timeout=60)
    deadline = time.monotonic() + 10
    while not upstream.requests:  # the key is leased once upstream has the request
        assert time.monotonic() < deadline, "the first request never reached upstream"
        time.sleep(0.01)
    return holder


def stream_events(gateway: Any) -> list[Any]:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with client.responses.create(model="gpt-4o-mini", input="hi", stream=True) as stream:
        return list(stream)


def test_a_queued_responses_stream_that_times_out_ends_with_error_and_response_failed(
    start_gateway: Any, upstream: Any
) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-slow-delay1500-0001", KEY_CONCURRENCY="1", QUEUE_TIMEOUT_SEC="0.5",
                            HEARTBEAT_INTERVAL_SEC="0.1", USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(1) as pool:
        holder = hold_the_only_key(gateway, upstream, pool)
        events = stream_events(gateway)  # the SDK raises on the chat-completions error shape
        holder.result()

    assert [e.type for e in events] == ["error", "response.failed"]
    error, failed = events
    assert error.code == "queue_timeout" and "queue" in error.message
    assert failed.response.status == "failed"
    assert failed.response.error.code == "server_error" and "queue" in failed.response.error.message
    assert failed.response.model == "gpt-4o-mini"
    assert [e.sequence_number for e in events] == [0, 1]


def test_an_upstream_refusal_after_the_stream_began_ends_it_with_the_responses_events(
    start_gateway: Any, upstream: Any
) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-forbidden-delay1000-0001", KEY_CONCURRENCY="1",
                            HEARTBEAT_INTERVAL_SEC="0.1", USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(1) as pool:
        holder = hold_the_only_key(gateway, upstream, pool)
        events = stream_events(gateway)
        assert holder.result().status_code == 403

    assert [e.type for e in events] == ["error", "response.failed"]
    assert events[0].message and events[0].message == events[1].response.error.message
    assert "sk-forbidden" not in events[0].message


def test_a_chat_completions_stream_keeps_its_own_error_shape(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-slow-delay1500-0001", KEY_CONCURRENCY="1", QUEUE_TIMEOUT_SEC="0.5",
                            HEARTBEAT_INTERVAL_SEC="0.1", USER_CONCURRENCY_LIMIT="5")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with ThreadPoolExecutor(1) as pool:
        holder = hold_the_only_key(gateway, upstream, pool)
        try:
            with client.chat.completions.create(**CHAT, stream=True) as stream:  # type: ignore[call-overload]
                list(stream)
        except openai.APIError as error:
            raised = error
        holder.result()

    assert "queue" in raised.message


def test_a_doubled_v1_is_folded_into_one(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-doubled-0001", ANTHROPIC_KEY="sk-ant-doubled-0002")
    claude = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}

    replies = [
        httpx.post(gateway.url + "/v1/v1/chat/completions", json=CHAT, timeout=30),
        httpx.post(gateway.url + "/proxy/openai/v1/v1/chat/completions", json=CHAT, timeout=30),
        httpx.post(gateway.url + "/v1/v1/messages", json=claude, timeout=30),
        httpx.post(gateway.url + "/proxy/anthropic/v1/v1/messages", json=claude, timeout=30),
    ]

    assert [r.status_code for r in replies] == [200, 200, 200, 200], [r.text for r in replies]
    assert [r["path"] for r in upstream.requests] == ["/v1/chat/completions"] * 2 + ["/v1/messages"] * 2


def _responses_event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


async def _responses_break_off_after_a_word(exchange: Exchange) -> None:
    """OpenAI's first events of a Responses stream (numbered 0, 1, 2...), then the connection drops."""
    response = {"id": "resp_cut", "object": "response", "created_at": 1, "status": "in_progress",
                "model": "gpt-4o-mini", "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}
    item = {"id": "msg_cut", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": response},
        {"type": "response.in_progress", "sequence_number": 1, "response": response},
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": item},
        {"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_cut", "output_index": 0,
         "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_cut", "output_index": 0,
         "content_index": 0, "delta": "Hello", "logprobs": []},
    ]
    await exchange.write(STREAM_HEAD + b"".join(chunked(_responses_event(event)) for event in events))
    exchange.writer.close()  # no response.completed, no end of the chunked body: the connection just drops


def test_a_responses_stream_upstream_breaks_off_ends_with_failure_events_numbered_after_the_relayed_ones(
    start_gateway: Any,
) -> None:
    upstream = ScriptedUpstream(_responses_break_off_after_a_word).start()
    try:
        gateway = start_gateway(OPENAI_KEY="sk-responses-cut-0001", OPENAI_BASE_URL=upstream.url)
        events = stream_events(gateway)
    finally:
        upstream.stop()

    assert [e.type for e in events] == ["response.created", "response.in_progress", "response.output_item.added",
                                        "response.content_part.added", "response.output_text.delta",
                                        "error", "response.failed"]
    assert events[4].delta == "Hello"
    assert [e.sequence_number for e in events] == [0, 1, 2, 3, 4, 5, 6]
    error, failed = events[5:]
    assert error.code == "upstream_error"
    assert error.message == "The upstream openai API broke off its reply." == failed.response.error.message
    assert failed.response.status == "failed"
    assert "sk-responses-cut" not in error.message
    # The key was given back once, counted from what was relayed, not failed for upstream's break.
    assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1)
    key = gateway.key_status("0001")
    assert key["estimated_prompts"] == 1
    assert key["inflight"] == 0
    assert key["status"] == "active"
