"""The reply mappings: whole replies, streams event by event, and errors, in both directions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.translate.chat_reply import STOP_REASONS, ClaudeEventsFromChat, claude_message
from gateway.translate.claude_reply import FINISH_REASONS, ChatChunksFromClaude, chat_completion
from gateway.translate.error_bodies import anthropic_error_body, openai_error_body


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return f"data: {json.dumps({'id': 'chatcmpl-1', 'model': 'gpt-4o', 'choices': choices, **extra})}\n\n".encode()


def datas(stream: bytes) -> list[Any]:
    """The JSON of each `data:` line (and `[DONE]` as the string)."""
    out: list[Any] = []
    for line in stream.decode().splitlines():
        if line.startswith("data: "):
            out.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return out


# --- whole replies ------------------------------------------------------------------------------

CLAUDE_USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20}


def test_a_claude_message_becomes_a_chat_completion() -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
               "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Hi "},
                           {"type": "text", "text": "there"},
                           {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": [1]}}],
               "stop_reason": "tool_use", "usage": CLAUDE_USAGE}
    completion = json.loads(chat_completion(json.dumps(message).encode()))
    assert completion["id"] == "msg_1" and completion["model"] == "claude-haiku-4-5"
    assert completion["object"] == "chat.completion" and isinstance(completion["created"], int)
    assert completion["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Hi there", "refusal": None,
        "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"x":[1]}'}}]}}]
    assert completion["usage"] == {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                                   "prompt_tokens_details": {"cached_tokens": 100}}


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length")])
def test_every_stop_reason_has_its_finish_reason(stop_reason: str, finish: str) -> None:
    assert FINISH_REASONS[stop_reason] == finish
    body = {"id": "m", "model": "c", "content": [], "stop_reason": stop_reason, "usage": {}}
    assert json.loads(chat_completion(json.dumps(body).encode()))["choices"][0]["finish_reason"] == finish


def test_a_chat_completion_becomes_a_claude_message() -> None:
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Calling.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 130, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 100}}}
    message = json.loads(claude_message(json.dumps(completion).encode()))
    assert message == {
        "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o",
        "content": [{"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": 1}},
                    {"type": "tool_use", "id": "call_2", "name": "g", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 5, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 0}}


@pytest.mark.parametrize(("finish", "stop_reason"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    ("function_call", "tool_use")])
def test_every_finish_reason_has_its_stop_reason(finish: str, stop_reason: str) -> None:
    assert STOP_REASONS[finish] == stop_reason
    body = {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": finish, "message": {"content": "x"}}]}
    assert json.loads(claude_message(json.dumps(body).encode()))["stop_reason"] == stop_reason


def test_an_openai_refusal_is_text_with_the_refusal_stop_reason() -> None:
    body = {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"content": None, "refusal": "I can't."}}]}
    message = json.loads(claude_message(json.dumps(body).encode()))
    assert message["content"] == [{"type": "text", "text": "I can't."}] and message["stop_reason"] == "refusal"


# --- errors -------------------------------------------------------------------------------------


def test_error_bodies_change_dialect_and_keep_their_meaning() -> None:
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert json.loads(openai_error_body(overloaded)) == {"error": {
        "message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded_error"}}
    limited = b'{"error":{"message":"Slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}'
    assert json.loads(anthropic_error_body(limited)) == {"type": "error", "error": {
        "type": "rate_limit_error", "message": "Slow down"}}
    assert json.loads(anthropic_error_body(b"<html>bad gateway</html>"))["error"]["type"] == "api_error"


# --- Claude's stream as OpenAI chunks -----------------------------------------------------------

START = sse("message_start", {"type": "message_start", "message": {
    "id": "msg_1", "model": "claude-haiku-4-5", "content": [],
    "usage": {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 100,
              "cache_creation_input_tokens": 20}}})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


CLAUDE_TOOL_STREAM = [
    START,
    block_start(0, {"type": "text", "text": ""}),
    sse("ping", {"type": "ping"}),
    block_delta(0, {"type": "text_delta", "text": "Let me look."}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}),
    block_delta(1, {"type": "input_json_delta", "partial_json": ""}),
    block_delta(1, {"type": "input_json_delta", "partial_json": '{"city": '}),
    block_delta(1, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
    block_start(2, {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}}),
    block_delta(2, {"type": "input_json_delta", "partial_json": '{"utc": 1}'}),
    sse("content_block_stop", {"type": "content_block_stop", "index": 2}),
    sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"output_tokens": 42}}),
    sse("message_stop", {"type": "message_stop"}),
]


def test_claude_stream_tool_calls_get_their_own_running_index_and_start_with_empty_arguments() -> None:
    translator = ChatChunksFromClaude(include_usage=False)
    out = [translator.feed(event) for event in CLAUDE_TOOL_STREAM]
    chunks = datas(b"".join(out))
    assert chunks[-1] == "[DONE]" and translator.finish() == b""
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Let me look."}
    assert deltas[2] == {"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function",
                                         "function": {"name": "weather", "arguments": ""}}]}
    assert deltas[3:5] == [{"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                           {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}]
    assert deltas[5]["tool_calls"][0]["index"] == 1 and deltas[5]["tool_calls"][0]["id"] == "toolu_b"
    assert deltas[6] == {"tool_calls": [{"index": 1, "function": {"arguments": '{"utc": 1}'}}]}
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 7 + ["tool_calls"]
    assert {c["id"] for c in chunks[:-1]} == {"msg_1"} and {c["model"] for c in chunks[:-1]} == {"claude-haiku-4-5"}
    assert all("usage" not in c for c in chunks[:-1])
    assert out[2] == b"" and out[4] == b""  # a ping and a block's end say nothing to an OpenAI client


def test_claude_stream_usage_chunk_only_when_asked_with_cache_reads_in_the_prompt() -> None:
    translator = ChatChunksFromClaude(include_usage=True)
    chunks = datas(b"".join(translator.feed(event) for event in CLAUDE_TOOL_STREAM))
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"] == {"prompt_tokens": 130, "completion_tokens": 42, "total_tokens": 172,
                                   "prompt_tokens_details": {"cached_tokens": 100}}


def test_claude_stream_error_event_becomes_an_error_chunk_and_a_cut_stream_ends_in_one() -> None:
    translator = ChatChunksFromClaude(include_usage=False)
    translator.feed(START)
    error = translator.feed(sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                     "message": "Overloaded"}}))
    assert datas(error) == [{"error": {"message": "Overloaded", "type": "server_error", "param": None,
                                       "code": "overloaded_error"}}]
    assert translator.finish() == b""  # the error already ended it
    assert translator.feed(CLAUDE_TOOL_STREAM[3]) == b""
    cut = ChatChunksFromClaude(include_usage=False)
    cut.feed(START)
    assert datas(cut.finish())[0]["error"]["message"] == "The upstream stream ended before it was complete."


# --- OpenAI's stream as Claude events -----------------------------------------------------------

OPENAI_TOOL_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Calling"}),
    chunk({"content": " now."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                           "function": {"name": "weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                           "function": {"name": "time", "arguments": '{"utc":1}'}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 130, "completion_tokens": 42, "prompt_tokens_details": {"cached_tokens": 100}}),
    b"data: [DONE]\n\n",
]


def events(stream: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in stream.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_openai_stream_becomes_claude_blocks_each_opened_and_closed_in_order() -> None:
    translator = ClaudeEventsFromChat()
    got = events(b"".join(translator.feed(c) for c in OPENAI_TOOL_STREAM))
    assert translator.finish() == b""
    assert [name for name, _ in got] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert got[0][1]["message"]["id"] == "msg_chatcmpl-1" and got[0][1]["message"]["model"] == "gpt-4o"
    assert got[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert got[3][1]["delta"] == {"type": "text_delta", "text": " now."}
    assert got[5][1] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "call_a", "name": "weather", "input": {}}}
    assert [e["delta"]["partial_json"] for _, e in got[6:8]] == ['{"city":', '"Paris"}']
    assert got[9][1]["index"] == 2 and got[9][1]["content_block"]["id"] == "call_b"
    assert got[10][1] == {"type": "content_block_delta", "index": 2,
                          "delta": {"type": "input_json_delta", "partial_json": '{"utc":1}'}}
    assert got[12][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                          "usage": {"input_tokens": 30, "output_tokens": 42, "cache_read_input_tokens": 100,
                                    "cache_creation_input_tokens": 0}}


def test_openai_stream_error_chunk_becomes_an_error_event_and_a_cut_stream_ends_in_one() -> None:
    translator = ClaudeEventsFromChat()
    translator.feed(OPENAI_TOOL_STREAM[1])
    error = translator.feed(b'data: {"error": {"message": "Boom", "type": "server_error"}}\n\n')
    assert events(error) == [("error", {"type": "error", "error": {"type": "api_error", "message": "Boom"}})]
    assert translator.feed(OPENAI_TOOL_STREAM[2]) == b""  # the error ended the client's stream
    assert translator.finish() == b""
    cut = ClaudeEventsFromChat()
    cut.feed(OPENAI_TOOL_STREAM[1])
    assert events(cut.finish())[0][1]["error"]["message"] == "The upstream stream ended before it was complete."


def test_keep_alive_comments_and_unreadable_events_say_nothing() -> None:
    assert ClaudeEventsFromChat().feed(b": keep-alive\n\n") == b""
    assert ChatChunksFromClaude(include_usage=False).feed(b"event: ping\ndata: {not json\n\n") == b""
