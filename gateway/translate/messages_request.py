"""An Anthropic Messages request, rewritten as an OpenAI Chat Completions request.

The top-level `system` becomes the first message; a user turn's `tool_result`
blocks become `tool` messages (one per result, in order) ahead of the turn's
other content; `tool_use` blocks become the assistant's `tool_calls`. Thinking
blocks replayed from an earlier turn have no place in OpenAI's format and are
left out. What OpenAI models cannot do is refused with a 400 that says so
(documents, server tools, thinking on a model that does not reason).
"""

from __future__ import annotations

from typing import Any

import msgspec

from catalog.families import family_of
from gateway.errors import GatewayError
from gateway.translate.chat_request import stop_sequences
from gateway.translate.images import openai_image

_encode = msgspec.json.Encoder().encode
_REASONING_FAMILIES = frozenset({"o-series", "gpt-5"})  # models that take reasoning_effort, and refuse temperature
_OPENAI_STOP_LIMIT = 4
_REFUSED = {
    "mcp_servers": "MCP servers are not translated for OpenAI models; remove `mcp_servers`.",
    "container": "Containers are not translated for OpenAI models; remove `container`.",
}


def openai_request(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The Chat Completions request for an Anthropic messages payload (already known to be a JSON object)."""
    for name, reason in _REFUSED.items():
        if payload.get(name) is not None:
            raise GatewayError("invalid_request", reason)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError("invalid_request", "messages: a non-empty list of messages is required.")
    reasoning = family_of("openai", model) in _REASONING_FAMILIES
    out: dict[str, Any] = {"model": model, "messages": [*_system(payload.get("system")), *_turns(messages)]}
    max_tokens = payload.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise GatewayError("invalid_request", "max_tokens: a positive integer is required.")
    out["max_completion_tokens"] = max_tokens
    if not reasoning:  # o-series and gpt-5 accept only their default sampling
        for name in ("temperature", "top_p"):
            value = payload.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[name] = value
    stop = payload.get("stop_sequences")
    if stop is not None:
        kept = stop_sequences(stop)
        if len(kept) > _OPENAI_STOP_LIMIT:
            raise GatewayError("invalid_request", f"stop_sequences: OpenAI models take at most {_OPENAI_STOP_LIMIT}.")
        if kept:
            out["stop"] = kept
    if payload.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # the usage that ends an Anthropic stream comes from here
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    _tools(payload, out)
    _output_format(payload, out)
    _thinking(payload.get("thinking"), model, reasoning, out)
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system.strip() else []
    if not isinstance(system, list):
        raise GatewayError("invalid_request", "system: a string or a list of text blocks is required.")
    text = "\n\n".join(b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str))
    return [{"role": "system", "content": text}] if text.strip() else []


def _turns(messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise GatewayError("invalid_request", f"messages.{index}.role: must be user or assistant.")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif not isinstance(content, list):
            raise GatewayError("invalid_request", f"messages.{index}.content: a string or a list of blocks.")
        elif message["role"] == "user":
            out.extend(_user(content, index))
        else:
            out.append(_assistant(content, index))
    return out


def _user(blocks: list[Any], index: int) -> list[dict[str, Any]]:
    """Tool results first, each a `tool` message, then the turn's own text and images as one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append(_tool_result(block, index))
        elif kind == "text":
            if isinstance(block.get("text"), str) and block["text"]:
                parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(openai_image(block.get("source")))
        else:
            raise GatewayError("invalid_request", f"messages.{index}: {kind!r} blocks are not translated for "
                                                  "OpenAI models (text, images and tool results are).")
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        content: Any = "".join(p["text"] for p in parts) if only_text and len(parts) == 1 else parts
        results.append({"role": "user", "content": content})
    return results


def _tool_result(block: dict[str, Any], index: int) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise GatewayError("invalid_request", f"messages.{index}: a tool_result needs its tool_use_id.")
    content = block.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise GatewayError("invalid_request", f"messages.{index}: OpenAI tool results carry text only.")
            texts.append(part.get("text") or "")
        content = "".join(texts)
    return {"role": "tool", "tool_call_id": call_id, "content": content if isinstance(content, str) else ""}


def _assistant(blocks: list[Any], index: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise GatewayError("invalid_request", f"messages.{index}: a tool_use block needs an id and a name.")
            arguments = _encode(block.get("input") or {}).decode()
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"], "arguments": arguments}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # OpenAI's format has no place for an earlier turn's reasoning
        else:
            raise GatewayError("invalid_request", f"messages.{index}: {kind!r} blocks are not translated for "
                                                  "OpenAI models.")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(payload: dict[str, Any], out: dict[str, Any]) -> None:
    tools = payload.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise GatewayError("invalid_request", "tools: a list is required.")
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = payload.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise GatewayError("invalid_request", "tool_choice.type: must be auto, any, tool or none.")
    if choice.get("disable_parallel_tool_use") is True and tools:
        out["parallel_tool_calls"] = False


def _tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not isinstance(
            tool.get("input_schema"), dict):
        raise GatewayError("invalid_request", f"tools.{index}: only custom tools with an input_schema are "
                                              "translated for OpenAI models (server tools are not).")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _output_format(payload: dict[str, Any], out: dict[str, Any]) -> None:
    config = payload.get("output_config")
    spec = config.get("format") if isinstance(config, dict) else payload.get("output_format")
    if spec is None:
        return
    if not isinstance(spec, dict) or spec.get("type") != "json_schema" or not isinstance(spec.get("schema"), dict):
        raise GatewayError("invalid_request", "output_config.format: a json_schema format with its schema.")
    out["response_format"] = {"type": "json_schema",
                              "json_schema": {"name": "output", "schema": spec["schema"], "strict": True}}


def _thinking(thinking: Any, model: str, reasoning: bool, out: dict[str, Any]) -> None:
    """Extended thinking as reasoning_effort, by its budget; a model that does not reason refuses it."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if thinking is None or kind == "disabled":
        return
    if not reasoning:
        raise GatewayError("invalid_request", f"thinking: {model} does not reason; leave `thinking` out, or use an "
                                              "o-series or gpt-5 model.")
    budget = thinking.get("budget_tokens") if kind == "enabled" else None
    if kind == "adaptive" or not isinstance(budget, int):
        out["reasoning_effort"] = "medium"
    else:
        out["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
