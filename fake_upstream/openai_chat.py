"""The mock's `/v1/chat/completions`: text, tool calls and structured output, whole or streamed.

What the "model" says is decided first (`_decide`): a tool call when the
request forces one or the prompt names one (`tool_calls`), JSON fitting the
`response_format` schema, or the mock's usual words. Then it is shaped as
api.openai.com shapes it: a streamed tool call opens with the call's index,
id and name and empty arguments, then sends the arguments in fragments
(`delta.tool_calls[0].function.arguments`), and finishes with `tool_calls`
(or `stop` when `tool_choice` named the function, as the real API does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .exchange import AnyReply, MockRequest, StreamReply, json_reply, new_id, sse_data
from .fake_text import completion_text, completion_tokens, count_message_tokens, output_length, until_stop
from .openai_endpoints import (
    SYSTEM_FINGERPRINT,
    InvalidRequest,
    closing_events,
    json_body,
    stream_options,
    usage_of,
)
from .schema_instance import instance_of
from .tool_calls import Tool, ToolCall, choose_tool_calls, fragments, json_of, last_prompt


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the "model" says: pieces of text (streamed one per event), or tool calls (in parallel)."""

    pieces: tuple[str, ...]
    tool_calls: tuple[ToolCall, ...]
    finish: str

    @property
    def tokens(self) -> int:
        return len(self.pieces) + sum(len(fragments(call.arguments)) for call in self.tool_calls)


def chat_completions(request: MockRequest, output_tokens: int) -> AnyReply:
    body = json_body(request, "model", "messages")
    stream, include_usage = stream_options(body)
    answer = _decide(body, output_tokens)
    usage = usage_of(count_message_tokens(body["messages"], per_message=4, priming=3), answer.tokens)
    completion: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body["model"]),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    call_ids = [new_id("call_") for _ in answer.tool_calls]
    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(answer.pieces), "refusal": None,
                                   "annotations": []}
        if answer.tool_calls:
            message["content"] = None
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call_id, call in zip(call_ids, answer.tool_calls, strict=True)
            ]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}
        return json_reply(200, {**completion, "choices": [choice], "usage": usage})
    frame = {**completion, "object": "chat.completion.chunk"}
    if include_usage:
        frame["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**frame, "choices": [choice]})

    if not answer.tool_calls:
        opening = [chunk({"role": "assistant", "content": "", "refusal": None})]
        tokens = [chunk({"content": piece}) for piece in answer.pieces]
    else:  # each call opens with its index, id and name (the first with the role), then its arguments follow
        opening = []
        tokens = []
        for index, (call_id, call) in enumerate(zip(call_ids, answer.tool_calls, strict=True)):
            named = {"index": index, "id": call_id, "type": "function",
                     "function": {"name": call.name, "arguments": ""}}
            if index == 0:
                opening.append(chunk({"role": "assistant", "content": None, "tool_calls": [named], "refusal": None}))
            else:
                tokens.append(chunk({"tool_calls": [named]}))
            tokens.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                          for piece in fragments(call.arguments))
    closing = closing_events(chunk({}, answer.finish), frame, usage if include_usage else None)
    return StreamReply(opening=opening, tokens=tokens, closing=closing)


def _decide(body: dict[str, Any], output_tokens: int) -> _Answer:
    tools = _tools(body.get("tools"))
    mode, forced = _tool_choice(body.get("tool_choice"), tools)
    prompt = last_prompt(body["messages"], tool_result_roles=_TOOL_ROLES)
    calls = choose_tool_calls(tools, mode, forced, prompt, parallel=body.get("parallel_tool_calls") is not False)
    if calls:
        return _Answer((), tuple(calls), "stop" if calls[0].forced else "tool_calls")
    structured = _structured_text(body.get("response_format"))
    if structured is not None:
        return _Answer(tuple(fragments(structured)), (), "stop")
    count, capped = output_length(output_tokens, body.get("max_completion_tokens", body.get("max_tokens")))
    pieces, stopped_at = until_stop(completion_tokens(count), _stops(body.get("stop")))
    return _Answer(pieces, (), "length" if capped and stopped_at is None else "stop")


_TOOL_ROLES = frozenset({"tool", "function"})


def _stops(value: Any) -> list[str]:
    """`stop`: a string or a list of them; the text ends before the first found, and the finish is `stop`."""
    if isinstance(value, str):
        return [value]
    return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []


def _tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    tools = []
    for index, entry in enumerate(value):
        function = entry.get("function") if isinstance(entry, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(
                f"Missing required parameter: 'tools[{index}].function.name'.",
                f"tools[{index}].function.name", "missing_required_parameter",
            )
        parameters = function.get("parameters")
        tools.append(Tool(function["name"], parameters if isinstance(parameters, dict) else {"type": "object"}))
    return tools


def _tool_choice(value: Any, tools: list[Tool]) -> tuple[str, str | None]:
    """`none`, `auto`, `any` (the API's `required`) or `tool` with the function's name."""
    if value is None or value == "auto":
        return "auto", None
    if value == "none":
        return "none", None
    if value == "required":
        return "any", None
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a named function.",
            "tool_choice", "invalid_value",
        )
    if name not in {tool.name for tool in tools}:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': function '{name}' is not among the tools.", "tool_choice",
            "invalid_value",
        )
    return "tool", name


def _structured_text(value: Any) -> str | None:
    """The JSON a `response_format` asks for, or None for plain text."""
    if not isinstance(value, dict) or value.get("type") in (None, "text"):
        return None
    if value["type"] == "json_object":
        return json_of({"reply": completion_text(4)})
    if value["type"] != "json_schema":
        raise InvalidRequest(
            f"Invalid value: '{value['type']}'. Supported values are: 'json_object', 'json_schema', and 'text'.",
            "response_format.type", "invalid_value",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema",
            "missing_required_parameter",
        )
    schema = spec.get("schema")
    return json_of(instance_of(schema if isinstance(schema, dict) else {"type": "object"}))
