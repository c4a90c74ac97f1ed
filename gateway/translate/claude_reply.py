"""Claude's answer (Anthropic Messages) as an OpenAI chat completion: whole, or chunk by chunk.

A stream is translated event by event as it arrives, by a small object per
stream that remembers only what the next chunk needs: the completion's id
and model (as bytes, ready to prefix each chunk), which content block is
which tool call, and the usage so far. Tool calls are numbered by poolgate's
own counter — a content block's index counts text blocks too — so parallel
calls are never merged; each opens with its id and name and empty arguments,
then every `input_json_delta` is appended as it comes.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from gateway.sse import event_data
from gateway.translate.error_bodies import openai_error_body, openai_error_event

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# Anthropic stop_reason -> OpenAI finish_reason
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",  # a paused server-tool turn; no server tools are sent from the OpenAI format
}
_CUT_SHORT = (b'{"type":"error","error":{"type":"api_error",'
              b'"message":"The upstream stream ended before it was complete."}}')


def chat_usage(usage: Any) -> dict[str, Any]:
    """Anthropic usage as OpenAI's: its input excludes cache reads and writes, OpenAI's prompt includes them."""
    if not isinstance(usage, dict):
        usage = {}
    read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": read}}


def chat_completion(body: bytes) -> bytes:
    """A whole Messages reply as a chat completion."""
    try:
        message: Any = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        return openai_error_body(b"")
    if not isinstance(message, dict):
        return openai_error_body(b"")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            arguments = _encode(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or (None if calls else ""),
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    choice = {"index": 0, "message": reply, "logprobs": None,
              "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop")}
    return _encode({
        "id": message.get("id"), "object": "chat.completion", "created": int(time.time()),
        "model": message.get("model"), "choices": [choice], "usage": chat_usage(message.get("usage")),
    })


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Message(msgspec.Struct):
    id: str = ""
    model: str = ""
    usage: _Usage | None = None


class _Block(msgspec.Struct):
    type: str = ""
    id: str = ""
    name: str = ""


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None


_read_event = msgspec.json.Decoder(_Event).decode


class ChatChunksFromClaude:
    """Feed it Anthropic stream events one by one; it answers with the OpenAI chunks they become."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._head = b""  # `{"id":...,"object":...,"created":...,"model":...` of every chunk
        self._tool_of_block: dict[int, int] = {}  # content-block index -> tool call index
        self._usage: dict[str, int] = {}
        self._finish = "stop"
        self.ended = False  # message_stop or an error event was seen

    def feed(self, event: bytes) -> bytes:
        if self.ended:  # after an error or the last event, anything more upstream sends is not the client's
            return b""
        data = event_data(event)
        if not data:
            return b""
        try:
            parsed = _read_event(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return b""
        kind = parsed.type
        delta = parsed.delta
        if kind == "content_block_delta" and delta is not None:
            if delta.type == "text_delta" and delta.text:
                return self._chunk(b'{"content":' + _encode(delta.text) + b"}")
            if delta.type == "input_json_delta" and delta.partial_json:
                tool = self._tool_of_block.get(parsed.index, 0)
                return self._chunk(b'{"tool_calls":[{"index":%d,"function":{"arguments":' % tool
                                   + _encode(delta.partial_json) + b"}}]}")
            return b""  # thinking and its signature: the OpenAI format has no place for them
        if kind == "content_block_start" and parsed.content_block is not None:
            block = parsed.content_block
            if block.type != "tool_use":
                return b""
            tool = self._tool_of_block[parsed.index] = len(self._tool_of_block)
            opening = {"tool_calls": [{"index": tool, "id": block.id, "type": "function",
                                       "function": {"name": block.name, "arguments": ""}}]}
            return self._chunk(_encode(opening))
        if kind == "message_start" and parsed.message is not None:
            return self._start(parsed.message)
        if kind == "message_delta":
            if delta is not None and delta.stop_reason:
                self._finish = FINISH_REASONS.get(delta.stop_reason, "stop")
            self._count(parsed.usage)
            return b""
        if kind == "message_stop":
            self.ended = True
            finish = b'{},"logprobs":null,"finish_reason":"' + self._finish.encode() + b'"}]}\n\n'
            out = b"data: " + self._head + b',"choices":[{"index":0,"delta":' + finish
            if self._include_usage:
                out += b"data: " + self._head + b',"choices":[],"usage":' + _encode(chat_usage(self._usage)) + b"}\n\n"
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            self.ended = True
            return openai_error_event(data)
        return b""  # ping, content_block_stop

    def finish(self) -> bytes:
        """What ends the client's stream once upstream's has ended: an error, if upstream's was cut short."""
        return b"" if self.ended else openai_error_event(_CUT_SHORT)

    def _start(self, message: _Message) -> bytes:
        self._head = (b'{"id":' + _encode(message.id) + b',"object":"chat.completion.chunk","created":'
                      + str(int(time.time())).encode() + b',"model":' + _encode(message.model))
        self._count(message.usage)
        return self._chunk(b'{"role":"assistant","content":""}')

    def _count(self, usage: _Usage | None) -> None:
        if usage is None:
            return
        for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = getattr(usage, name)
            if value is not None:
                self._usage[name] = value  # cumulative: a later figure replaces an earlier one

    def _chunk(self, delta: bytes) -> bytes:
        return (b"data: " + self._head + b',"choices":[{"index":0,"delta":' + delta
                + b',"logprobs":null,"finish_reason":null}]}\n\n')
