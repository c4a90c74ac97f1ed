"""An OpenAI Chat Completions request, rewritten as an Anthropic Messages request.

What a Claude model cannot do is refused here with a 400 that says so (more
than one choice, log probabilities, audio, files, JSON mode without a schema,
thinking replayed through tool calls); what has no meaning there is left out
(penalties, seed, logit bias, `store`); everything else is carried over with
the shape Anthropic requires:

- system and developer messages become the top-level `system`;
- a run of `tool` messages becomes one user message of `tool_result` blocks,
  in order, and consecutive messages of one role are merged into one turn;
- empty text is never sent (Anthropic refuses an empty text block);
- `max_tokens` is always sent: the client's, else a default per model.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import GatewayError
from gateway.translate.images import claude_image

# Anthropic requires max_tokens; a client that names none gets this much room to answer.
DEFAULT_MAX_TOKENS = 8192
_SMALL_MODELS_MAX_TOKENS = 4096  # claude-3-haiku's ceiling
# reasoning_effort -> thinking budget (tokens); "minimal" and "none" mean no thinking.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
# Fields whose answer would be missing or wrong without an equivalent: refused.
_REFUSED = {
    "logprobs": "Claude models do not return log probabilities; remove `logprobs`.",
    "top_logprobs": "Claude models do not return log probabilities; remove `top_logprobs`.",
    "audio": "Claude models do not answer in audio; remove `audio`.",
    "web_search_options": "Web search is not translated for Claude models; remove `web_search_options`.",
    "functions": "The legacy `functions` field is not translated; use `tools`.",
    "function_call": "The legacy `function_call` field is not translated; use `tool_choice`.",
}
_decode = msgspec.json.Decoder().decode


def anthropic_request(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages request for an OpenAI chat payload (already known to be a JSON object)."""
    for name, reason in _REFUSED.items():
        if payload.get(name) not in (None, False):
            raise GatewayError("invalid_request", reason)
    n = payload.get("n")
    if n not in (None, 1):
        raise GatewayError("invalid_request", "Claude models give one choice per request: `n` must be 1.")
    modalities = payload.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise GatewayError("invalid_request", "Claude models answer in text only: `modalities` must be [\"text\"].")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GatewayError("invalid_request", "`messages` must be a non-empty list of messages.")
    system, turns = _conversation(messages)
    out: dict[str, Any] = {"model": model, "messages": turns, "max_tokens": _max_tokens(payload, model)}
    if system:
        out["system"] = system
    _sampling(payload, out)
    stop = payload.get("stop")
    if stop is not None:
        out["stop_sequences"] = stop_sequences(stop)
    if payload.get("stream") is True:
        out["stream"] = True
    user = payload.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    _tools(payload, out)
    _response_format(payload.get("response_format"), out)
    _thinking(payload.get("reasoning_effort"), turns, out)
    return out


def stop_sequences(stop: Any) -> list[str]:
    """`stop` (a string or a list) as `stop_sequences`, whitespace-only entries dropped (Anthropic refuses them)."""
    entries = [stop] if isinstance(stop, str) else stop
    if not isinstance(entries, list) or not all(isinstance(s, str) for s in entries):
        raise GatewayError("invalid_request", "`stop` must be a string or a list of strings.")
    return [s for s in entries if s.strip()]


def _max_tokens(payload: dict[str, Any], model: str) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GatewayError("invalid_request", f"`{name}` must be a positive integer.")
        return value
    return _SMALL_MODELS_MAX_TOKENS if model.lower().startswith("claude-3-haiku") else DEFAULT_MAX_TOKENS


def _sampling(payload: dict[str, Any], out: dict[str, Any]) -> None:
    """temperature and top_p: newer Claude models refuse both at once, so temperature wins; 0..2 becomes 0..1."""
    temperature, top_p = payload.get("temperature"), payload.get("top_p")
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    elif isinstance(top_p, (int, float)) and not isinstance(top_p, bool):
        out["top_p"] = top_p


# --- messages ---------------------------------------------------------------------------------


def _conversation(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, turns): system and developer messages lifted out, the rest as alternating turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise GatewayError("invalid_request", f"messages[{index}] must be an object.")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), index))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), index)
        elif role == "assistant":
            blocks = _assistant_blocks(message, index)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, index)]
        else:
            raise GatewayError("invalid_request", f"messages[{index}].role {role!r} is not translated for Claude.")
        if not blocks:
            continue  # an empty turn says nothing, and Anthropic refuses empty text
        if turns and turns[-1]["role"] == role:
            _merge(turns[-1]["content"], blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise GatewayError("invalid_request", "`messages` holds no user or assistant message with content.")
    return system, turns


def _merge(into: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> None:
    """One turn from two: tool results first, as Anthropic requires of a user turn that answers tool calls."""
    into.extend(blocks)
    if any(b["type"] == "tool_result" for b in blocks):
        into.sort(key=lambda b: b["type"] != "tool_result")  # stable: each group keeps its order


def _text_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content.strip() else []
    if not isinstance(content, list):
        if content is None:
            return []
        raise GatewayError("invalid_request", f"messages[{index}].content must be a string or a list of parts.")
    blocks = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise GatewayError("invalid_request", f"messages[{index}] may hold only text parts here.")
        block = _text_block(part, part.get("text") if part["type"] == "text" else part.get("refusal"))
        if block is not None:
            blocks.append(block)
    return blocks


def _text_block(part: dict[str, Any], text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.strip():
        return None
    block: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(part.get("cache_control"), dict):  # the prompt-caching marker some OpenAI clients already send
        block["cache_control"] = part["cache_control"]
    return block


def _user_blocks(content: Any, index: int) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, index)
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block = _text_block(part, part.get("text"))
            if block is not None:
                blocks.append(block)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise GatewayError("invalid_request", f"messages[{index}]: an image_url part needs a `url`.")
            blocks.append(claude_image(url))
        else:
            raise GatewayError(
                "invalid_request", f"messages[{index}]: {kind!r} parts are not translated for Claude (text and "
                "images are)."
            )
    return blocks


def _assistant_blocks(message: dict[str, Any], index: int) -> list[dict[str, Any]]:
    blocks = _text_blocks(message.get("content"), index)
    calls = message.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise GatewayError("invalid_request", f"messages[{index}].tool_calls must be a list.")
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not isinstance(
                function.get("name"), str):
            raise GatewayError("invalid_request", f"messages[{index}]: each tool call needs an id and a function name.")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": _arguments(function.get("arguments"), index)})
    return blocks


def _arguments(arguments: Any, index: int) -> dict[str, Any]:
    if arguments in (None, ""):
        return {}
    try:
        value = _decode(arguments) if isinstance(arguments, str) else None
    except (msgspec.DecodeError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise GatewayError("invalid_request", f"messages[{index}]: tool call arguments must be a JSON object.")
    return value


def _tool_result(message: dict[str, Any], index: int) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise GatewayError("invalid_request", f"messages[{index}]: a tool message needs its `tool_call_id`.")
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, str):
        if content:
            result["content"] = content
    else:
        blocks = _text_blocks(content, index)
        if blocks:
            result["content"] = blocks
    return result


# --- tools, output format, thinking ---------------------------------------------------------------


def _tools(payload: dict[str, Any], out: dict[str, Any]) -> None:
    tools = payload.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise GatewayError("invalid_request", "`tools` must be a list.")
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = _tool_choice(payload.get("tool_choice"))
    if payload.get("parallel_tool_calls") is False and tools:
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _tool(tool: Any, index: int) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise GatewayError("invalid_request", f"tools[{index}]: only function tools with a name are translated.")
    parameters = function.get("parameters")
    out: dict[str, Any] = {
        "name": function["name"],
        "input_schema": parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise GatewayError(
        "invalid_request", "`tool_choice` must be \"auto\", \"required\", \"none\" or a named function."
    )


def _response_format(spec: Any, out: dict[str, Any]) -> None:
    """`json_schema` becomes Claude's structured output; JSON mode without a schema has no equivalent."""
    if spec is None or (isinstance(spec, dict) and spec.get("type") == "text"):
        return
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "json_schema":
        inner = spec.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else None
        if not isinstance(schema, dict):
            raise GatewayError("invalid_request", "`response_format.json_schema.schema` must be a JSON schema.")
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    if kind == "json_object":
        raise GatewayError(
            "invalid_request", "Claude models have no JSON mode without a schema: use `response_format` "
            "{\"type\": \"json_schema\", ...} with the schema of the object you want."
        )
    raise GatewayError("invalid_request", "`response_format.type` must be text or json_schema for Claude models.")


def _thinking(effort: Any, turns: list[dict[str, Any]], out: dict[str, Any]) -> None:
    """reasoning_effort as a thinking budget; refused where the OpenAI format cannot carry what thinking needs."""
    if effort is None or effort in ("minimal", "none"):
        return
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise GatewayError("invalid_request", "`reasoning_effort` must be minimal, low, medium or high.")
    if any(b["type"] == "tool_use" for turn in turns for b in turn["content"]):
        # Claude needs each replayed tool-calling turn to start with its signed thinking block,
        # which the OpenAI format has nowhere to carry.
        raise GatewayError(
            "invalid_request", "`reasoning_effort` cannot be used with Claude once the conversation replays tool "
            "calls (their signed thinking cannot travel in the OpenAI format); leave it out for this request."
        )
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    out["max_tokens"] += budget  # the budget is spent inside max_tokens; the client's room to answer stays
    out.pop("temperature", None)  # thinking refuses any temperature but the default
    out.pop("top_p", None)
    choice = out.get("tool_choice")
    if choice is not None and choice["type"] in ("any", "tool"):
        raise GatewayError("invalid_request", "With `reasoning_effort`, Claude accepts only tool_choice auto or none.")
