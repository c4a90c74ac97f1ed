"""GPT's answer (OpenAI Chat Completions) as an Anthropic message: whole, or event by event.

A stream is translated chunk by chunk as it arrives, by a small object per
stream: it opens the message at the first chunk, opens a content block when
text or a new tool call begins (closing the one before), turns each piece of
tool arguments into an `input_json_delta`, and ends with `message_delta`
(stop reason and usage: upstream is always asked for its usage chunk) and
`message_stop` when OpenAI says `[DONE]`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.sse import event_data
from gateway.translate.error_bodies import anthropic_error_body, anthropic_error_event

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# OpenAI finish_reason -> Anthropic stop_reason
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_CUT_SHORT = b'{"error":{"type":"server_error","message":"The upstream stream ended before it was complete."}}'


def claude_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage as Anthropic's: cached prompt tokens are cache reads, and input excludes them."""
    if not isinstance(usage, dict):
        usage = {}
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") if isinstance(details, dict) else None) or 0
    return {"input_tokens": (usage.get("prompt_tokens") or 0) - cached, "output_tokens": usage.get(
        "completion_tokens") or 0, "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def claude_message(body: bytes) -> bytes:
    """A whole chat completion as a Messages reply."""
    try:
        completion: Any = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        return anthropic_error_body(b"")
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return anthropic_error_body(b"")
    choice = choices[0]
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    for text in (message.get("content"), message.get("refusal")):
        if isinstance(text, str) and text:
            content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                            "input": _input(function.get("arguments"))})
    stop = "refusal" if message.get("refusal") else STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn")
    return _encode({
        "id": f"msg_{completion.get('id')}", "type": "message", "role": "assistant",
        "model": completion.get("model"), "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": claude_usage(completion.get("usage")),
    })


def _input(arguments: Any) -> Any:
    try:
        value = _decode(arguments) if isinstance(arguments, str) and arguments else {}
    except (msgspec.DecodeError, RecursionError):
        value = None
    return value if isinstance(value, dict) else {}


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: str = ""
    model: str = ""
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None


_read_chunk = msgspec.json.Decoder(_Chunk).decode


def _event(name: bytes, data: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + data + b"\n\n"


class ClaudeEventsFromChat:
    """Feed it OpenAI stream chunks one by one; it answers with the Anthropic events they become."""

    def __init__(self) -> None:
        self._started = False
        self._open: int | None = None  # index of the content block now open
        self._open_is_text = False
        self._blocks = 0  # content blocks opened so far
        self._block_of_tool: dict[int, int] = {}  # OpenAI tool call index -> content block index
        self._stop = "end_turn"
        self._usage: Any = None
        self.ended = False

    def feed(self, event: bytes) -> bytes:
        if self.ended:  # after an error or the last event, anything more upstream sends is not the client's
            return b""
        data = event_data(event)
        if not data:
            return b""  # a comment or keep-alive
        if data == b"[DONE]":
            return self._end()
        try:
            chunk = _read_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return b""
        if chunk.error is not None:
            self.ended = True
            return anthropic_error_event(data)
        out = b"" if self._started else self._start(chunk)
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                for text in (delta.content, delta.refusal):
                    if text:
                        out += self._text(text)
                for call in delta.tool_calls or ():
                    out += self._tool(call)
            if choice.finish_reason:
                self._stop = STOP_REASONS.get(choice.finish_reason, "end_turn")
        return out

    def finish(self) -> bytes:
        """What ends the client's stream once upstream's has ended: an error, if upstream's was cut short."""
        return b"" if self.ended else anthropic_error_event(_CUT_SHORT)

    def _start(self, chunk: _Chunk) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": f"msg_{chunk.id}", "type": "message", "role": "assistant", "model": chunk.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # OpenAI counts only at the end: see message_delta
        }
        return _event(b"message_start", _encode({"type": "message_start", "message": message}))

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open is None or not self._open_is_text:
            out = self._close() + self._open_block({"type": "text", "text": ""}, is_text=True)
        return out + _event(b"content_block_delta", b'{"type":"content_block_delta","index":%d,' % (self._blocks - 1)
                            + b'"delta":{"type":"text_delta","text":' + _encode(text) + b"}}")

    def _tool(self, call: _ToolCall) -> bytes:
        out = b""
        block = self._block_of_tool.get(call.index)
        if block is None:
            name = call.function.name if call.function is not None else None
            out = self._close() + self._open_block(
                {"type": "tool_use", "id": call.id or "", "name": name or "", "input": {}}, is_text=False)
            block = self._block_of_tool[call.index] = self._blocks - 1
        arguments = call.function.arguments if call.function is not None else None
        if arguments:
            out += _event(b"content_block_delta", b'{"type":"content_block_delta","index":%d,' % block
                          + b'"delta":{"type":"input_json_delta","partial_json":' + _encode(arguments) + b"}}")
        return out

    def _open_block(self, block: dict[str, Any], *, is_text: bool) -> bytes:
        self._open = self._blocks
        self._open_is_text = is_text
        self._blocks += 1
        return _event(b"content_block_start",
                      _encode({"type": "content_block_start", "index": self._open, "content_block": block}))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return _event(b"content_block_stop", b'{"type":"content_block_stop","index":%d}' % index)

    def _end(self) -> bytes:
        self.ended = True
        out = b"" if self._started else self._start(_Chunk())
        usage = claude_usage(self._usage)
        delta = {"type": "message_delta", "delta": {"stop_reason": self._stop, "stop_sequence": None},
                 "usage": usage}
        return (out + self._close() + _event(b"message_delta", _encode(delta))
                + _event(b"message_stop", b'{"type":"message_stop"}'))
