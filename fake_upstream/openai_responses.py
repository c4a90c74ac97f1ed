"""The mock's `/v1/responses`: text, function calls and structured output, whole or streamed.

As in chat completions (`openai_chat`), what the "model" says is decided
first: a function call when `tool_choice` forces one or the last input names
one, JSON fitting `text.format` when it is a `json_schema`, else the mock's
words. A call is a `function_call` output item; streamed, it is added with
empty `arguments`, which then arrive as `response.function_call_arguments.delta`
events before `...arguments.done` and the item's `output_item.done`.
"""

from __future__ import annotations

import time
from typing import Any

from .exchange import AnyReply, MockRequest, StreamReply, json_reply, new_id, sse_event
from .fake_text import completion_text, completion_tokens, count_message_tokens, count_text_tokens, output_length
from .openai_endpoints import InvalidRequest, json_body
from .schema_instance import instance_of
from .tool_calls import Tool, ToolCall, choose_tool_call, fragments, json_of, last_prompt


def responses(request: MockRequest, output_tokens: int) -> AnyReply:
    body = json_body(request, "model")
    stream = body.get("stream") is True
    tools = _tools(body.get("tools"))
    mode, forced = _tool_choice(body.get("tool_choice"), tools)
    call = choose_tool_call(tools, mode, forced, last_prompt(body.get("input"), tool_result_roles=frozenset()))
    text_format = body["text"].get("format") if isinstance(body.get("text"), dict) else None
    structured = _structured_text(text_format)
    capped = False
    if call is not None:
        pieces: tuple[str, ...] = tuple(fragments(call.arguments))
    elif structured is not None:
        pieces = tuple(fragments(structured))
    else:
        count, capped = output_length(output_tokens, body.get("max_output_tokens"))
        pieces = completion_tokens(count)
    input_tokens = count_text_tokens(body.get("instructions")) + count_message_tokens(
        body.get("input", []), per_message=4, priming=3
    )
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + len(pieces),
    }
    status = "incomplete" if capped else "completed"
    item = _function_call_item(call) if call is not None else _message_item("".join(pieces), status)
    response: dict[str, Any] = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if capped else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body["model"]),
        "output": [item],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": text_format or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    if not stream:
        return json_reply(200, response)
    return _stream(response, item, pieces, capped)


def _stream(response: dict[str, Any], item: dict[str, Any], pieces: tuple[str, ...], capped: bool) -> StreamReply:
    sequence = iter(range(1_000_000))

    def event(name: str, **fields: Any) -> bytes:
        return sse_event(name, {"type": name, "sequence_number": next(sequence), **fields})

    started = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    opening = [event("response.created", response=started), event("response.in_progress", response=started)]
    ending = event("response.incomplete" if capped else "response.completed", response=response)
    if item["type"] == "function_call":
        where = {"item_id": item["id"], "output_index": 0}
        opening.append(event("response.output_item.added", output_index=0,
                             item={**item, "status": "in_progress", "arguments": ""}))
        tokens = [event("response.function_call_arguments.delta", **where, delta=piece) for piece in pieces]
        closing = [
            event("response.function_call_arguments.done", **where, arguments=item["arguments"]),
            event("response.output_item.done", output_index=0, item=item),
            ending,
        ]
        return StreamReply(opening=opening, tokens=tokens, closing=closing)
    part = item["content"][0]
    position = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    opening += [
        event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []}),
        event("response.content_part.added", **position, part={**part, "text": ""}),
    ]
    tokens = [event("response.output_text.delta", **position, delta=piece, logprobs=[]) for piece in pieces]
    closing = [
        event("response.output_text.done", **position, text=part["text"], logprobs=[]),
        event("response.content_part.done", **position, part=part),
        event("response.output_item.done", output_index=0, item=item),
        ending,
    ]
    return StreamReply(opening=opening, tokens=tokens, closing=closing)


def _message_item(text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": new_id("msg_"), "type": "message", "status": status, "role": "assistant", "content": [part]}


def _function_call_item(call: ToolCall) -> dict[str, Any]:
    return {"id": new_id("fc_"), "type": "function_call", "status": "completed", "arguments": call.arguments,
            "call_id": new_id("call_"), "name": call.name}


def _tools(value: Any) -> list[Tool]:
    """Function tools (`{type: function, name, parameters}`); built-in tools are not the mock's to run."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    tools = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or entry.get("type") != "function":
            continue
        if not isinstance(entry.get("name"), str):
            raise InvalidRequest(f"Missing required parameter: 'tools[{index}].name'.", f"tools[{index}].name",
                                 "missing_required_parameter")
        parameters = entry.get("parameters")
        tools.append(Tool(entry["name"], parameters if isinstance(parameters, dict) else {"type": "object"}))
    return tools


def _tool_choice(value: Any, tools: list[Tool]) -> tuple[str, str | None]:
    if value is None or value == "auto":
        return "auto", None
    if value == "none":
        return "none", None
    if value == "required":
        return "any", None
    name = value.get("name") if isinstance(value, dict) and value.get("type") == "function" else None
    if not isinstance(name, str) or name not in {tool.name for tool in tools}:
        raise InvalidRequest("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or one of "
                             "the function tools by name.", "tool_choice", "invalid_value")
    return "tool", name


def _structured_text(text_format: Any) -> str | None:
    if not isinstance(text_format, dict) or text_format.get("type") in (None, "text"):
        return None
    if text_format["type"] == "json_object":
        return json_of({"reply": completion_text(4)})
    schema = text_format.get("schema")
    if text_format["type"] != "json_schema" or not isinstance(schema, dict):
        raise InvalidRequest("Invalid value for 'text.format': a json_schema format needs its schema.",
                             "text.format", "invalid_value")
    return json_of(instance_of(schema))
