"""The Anthropic half of the mock upstream: messages, token counting and models.

Shapes, event sequences, error bodies and headers follow api.anthropic.com,
including its quirks: an exhausted balance is a 400 (not a 429), overload is
529, and every request needs an `anthropic-version` header.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .accounts import may_use_model
from .behaviour import KeyGate, RateStatus, Refusal
from .exchange import (
    AnyReply,
    Handler,
    MockRequest,
    NotJsonObject,
    Reply,
    StreamReply,
    encode_json,
    find_handler,
    json_reply,
    new_id,
    parse_json_object,
    sse_event,
)
from .fake_text import (
    completion_tokens,
    count_message_tokens,
    count_text_tokens,
    output_length,
    until_stop,
)
from .models import anthropic_knows
from .prompt_cache import PromptCache
from .schema_instance import instance_of
from .tool_calls import Tool, choose_tool_calls, fragments, json_of, last_prompt

MODELS: tuple[tuple[str, str, str], ...] = (
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22T00:00:00Z"),
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z"),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"),
    ("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z"),
)
_MODEL_OBJECTS = {
    model_id: {"type": "model", "id": model_id, "display_name": name, "created_at": created}
    for model_id, name, created in MODELS
}
_MODEL_LIST_BODY = encode_json(
    {
        "data": list(_MODEL_OBJECTS.values()),
        "has_more": False,
        "first_id": MODELS[0][0],
        "last_id": MODELS[-1][0],
    }
)


class EndpointError(Exception):
    """An endpoint's refusal of a request, answered as an Anthropic error body."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind


def error_body(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def answer_anthropic(
    request: MockRequest, gate: KeyGate, output_tokens: int, cache: PromptCache | None = None
) -> AnyReply:
    """Answer one Anthropic-dialect request: route, credential, version, key behaviour, then the endpoint.

    `cache` is the mock's prompt cache (one per mock, as one per organization upstream).
    """
    request_id = new_id("req_")

    def error(status: int, kind: str, message: str) -> Reply:
        return json_reply(status, error_body(kind, message, request_id))

    handler = find_handler(request, _ROUTES, _retrieve_model)
    verdict = None
    if handler is None:
        reply: AnyReply = error(404, "not_found_error", "Not Found")
    elif request.key is None:
        reply = error(401, "authentication_error", "x-api-key header is required")
    elif "anthropic-version" not in request.headers:
        reply = error(400, "invalid_request_error", "anthropic-version: header is required")
    else:
        verdict = gate.check(request.key, len(request.body) // 4)
        if verdict.refusal is not None:
            status, kind, message = _refusal(verdict.refusal, verdict.rate)
            reply = error(status, kind, message)
        else:
            try:
                if handler is _messages:
                    reply = _messages(request, output_tokens, cache or PromptCache())
                else:
                    reply = handler(request, output_tokens)
            except EndpointError as refused:
                reply = error(refused.status, refused.kind, refused.message)
    if verdict is not None and verdict.rate is not None:
        reply.headers.extend(rate_limit_headers(verdict.rate, time.time()))
        if not verdict.rate.allowed:
            reply.headers.append(("retry-after", str(verdict.rate.retry_after_seconds)))
    reply.headers.append(("request-id", request_id))
    return reply


def _refusal(refusal: Refusal, rate: RateStatus | None) -> tuple[int, str, str]:
    if refusal is Refusal.REVOKED:
        return 401, "authentication_error", "invalid x-api-key"
    if refusal is Refusal.FORBIDDEN:
        return 403, "permission_error", "Your API key does not have permission to use the specified resource."
    if refusal is Refusal.NO_QUOTA:
        return (  # Anthropic's documented type for an account out of credit
            402,
            "billing_error",
            (
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
                "to upgrade or purchase credits."
            ),
        )
    if refusal is Refusal.FAILS:
        return 500, "api_error", "Internal server error"
    if refusal is Refusal.OVERLOADED:
        return 529, "overloaded_error", "Overloaded"
    limit = rate.limit if rate is not None else 0
    return (
        429,
        "rate_limit_error",
        (
            f"This request would exceed the rate limit for your organization of {limit} requests per "
            "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the "
            "response headers for current usage. Please reduce the prompt length or the maximum tokens "
            "requested, or try again later."
        ),
    )


def rate_limit_headers(rate: RateStatus, now: float) -> list[tuple[str, str]]:
    """Anthropic's headers: counts, and when the window is fully replenished as an RFC 3339 time."""
    requests_reset = _rfc3339(now + rate.reset_seconds)
    return [
        ("anthropic-ratelimit-requests-limit", str(rate.limit)),
        ("anthropic-ratelimit-requests-remaining", str(rate.remaining)),
        ("anthropic-ratelimit-requests-reset", requests_reset),
        ("anthropic-ratelimit-tokens-limit", str(rate.tokens_limit)),
        ("anthropic-ratelimit-tokens-remaining", str(rate.tokens_remaining)),
        ("anthropic-ratelimit-tokens-reset", requests_reset),
    ]


def _rfc3339(timestamp: float) -> str:
    return _rfc3339_second(round(timestamp))


@lru_cache(maxsize=256)
def _rfc3339_second(second: int) -> str:
    # Cached: a busy limited key asks for the same few seconds over and over.
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- endpoints -------------------------------------------------------------


def _json_body(request: MockRequest, *required: str) -> dict[str, Any]:
    try:
        body = parse_json_object(request.body)
    except NotJsonObject:
        raise EndpointError("There was an error parsing the body of your request: not valid JSON.") from None
    for name in required:
        if body.get(name) is None:
            raise EndpointError(f"{name}: Field required")
    model = body.get("model")
    if isinstance(model, str) and not (anthropic_knows(model) and may_use_model(request.key, model)):
        raise EndpointError(f"model: {model}", 404, "not_found_error")
    return body


def _input_tokens(body: dict[str, Any]) -> int:
    return count_text_tokens(body.get("system")) + count_message_tokens(
        body["messages"], per_message=3, priming=4
    )


def _messages(request: MockRequest, output_tokens: int, cache: PromptCache | None = None) -> AnyReply:
    body = _json_body(request, "model", "messages", "max_tokens")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise EndpointError("max_tokens: Input should be greater than or equal to 1")
    blocks, stop_reason, stop_sequence = _decide(body, output_tokens, max_tokens)
    count = sum(len(pieces) for _, pieces in blocks)
    total_input = _input_tokens(body)
    written, read = (cache or PromptCache()).use(body, _input_tokens)
    usage = {  # as Anthropic counts: input_tokens excludes what was written to or read from the cache
        "input_tokens": total_input - written - read,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": count,
        "service_tier": "standard",
    }
    message: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": str(body["model"]),
        "content": [_whole(block, pieces) for block, pieces in blocks],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }
    if body.get("stream") is not True:
        return json_reply(200, message)
    started = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [sse_event("message_start", {"type": "message_start", "message": started})]
    for index, (block, pieces) in enumerate(blocks):
        events.append(sse_event("content_block_start",
                                {"type": "content_block_start", "index": index, "content_block": block}))
        if index == 0:
            events.append(sse_event("ping", {"type": "ping"}))
        kind, field = ("text_delta", "text") if block["type"] == "text" else ("input_json_delta", "partial_json")
        events.extend(
            sse_event("content_block_delta",
                      {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: piece}})
            for piece in pieces
        )
        events.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    closing = [
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                # cumulative, and (as the real API now does) with the input figures again
                "usage": {**{k: v for k, v in usage.items() if k != "service_tier"}, "output_tokens": count},
            },
        ),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    # Only the deltas are paced; the first block's opening and the last block's end go out at once.
    return StreamReply(opening=events[:3], tokens=events[3:-1], closing=[events[-1], *closing])


# A block as it opens in a stream (tool input `{}`, text empty), and the pieces streamed into it.
_Block = tuple[dict[str, Any], tuple[str, ...]]


def _decide(body: dict[str, Any], output_tokens: int, max_tokens: int) -> tuple[list[_Block], str, str | None]:
    """What the "model" says, why it stopped and at which stop sequence: tool calls when forced or named
    (one per tool named, unless `disable_parallel_tool_use`), JSON for an output format, else words."""
    tools = _tools(body.get("tools"))
    mode, forced = _tool_choice(body.get("tool_choice"))
    choice = body.get("tool_choice")
    parallel = not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use") is True)
    prompt = last_prompt(body["messages"], tool_result_roles=frozenset())
    calls = choose_tool_calls(tools, mode, forced, prompt, parallel=parallel)
    if calls:
        blocks: list[_Block] = [
            ({"type": "tool_use", "id": new_id("toolu_"), "name": call.name, "input": {}},
             ("", *fragments(call.arguments)))
            for call in calls
        ]
        if not calls[0].forced and mode == "auto":  # unforced, Claude says what it is about to do first
            blocks.insert(0, ({"type": "text", "text": ""}, completion_tokens(3)))
        return blocks, "tool_use", None
    structured = _structured_text(body)
    if structured is not None:
        return [({"type": "text", "text": ""}, tuple(fragments(structured)))], "end_turn", None
    count, capped = output_length(output_tokens, max_tokens)
    pieces, stop_sequence = _until_stop_sequence(completion_tokens(count), body.get("stop_sequences"))
    if stop_sequence is not None:
        return [({"type": "text", "text": ""}, pieces)], "stop_sequence", stop_sequence
    return [({"type": "text", "text": ""}, pieces)], "max_tokens" if capped else "end_turn", None


def _until_stop_sequence(pieces: tuple[str, ...], stops: Any) -> tuple[tuple[str, ...], str | None]:
    if isinstance(stops, list) and any(not isinstance(stop, str) or not stop.strip() for stop in stops):
        raise EndpointError("stop_sequences: each stop sequence must contain non-whitespace")
    return until_stop(pieces, stops if isinstance(stops, list) else [])


def _whole(block: dict[str, Any], pieces: tuple[str, ...]) -> dict[str, Any]:
    """A block as a whole reply carries it: text joined, tool input parsed."""
    joined = "".join(pieces)
    if block["type"] == "text":
        return {"type": "text", "text": joined}
    return {**block, "input": json.loads(joined)}


def _tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EndpointError("tools: Input should be a valid list")
    tools = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise EndpointError(f"tools.{index}.name: Field required")
        schema = entry.get("input_schema")
        if isinstance(schema, dict):  # server tools (web search...) have none and are not the mock's to run
            tools.append(Tool(entry["name"], schema))
    return tools


def _tool_choice(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise EndpointError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    name = value.get("name")
    if kind == "tool" and not isinstance(name, str):
        raise EndpointError("tool_choice.tool.name: Field required")
    return kind, name if kind == "tool" else None


def _structured_text(body: dict[str, Any]) -> str | None:
    """JSON fitting `output_config.format` (or the beta's `output_format`), or None for plain text."""
    config = body.get("output_config")
    spec = config.get("format") if isinstance(config, dict) else body.get("output_format")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema" or not isinstance(spec.get("schema"), dict):
        raise EndpointError("output_config.format: a json_schema format needs its schema")
    return json_of(instance_of(spec["schema"]))


def _count_tokens(request: MockRequest, output_tokens: int) -> Reply:
    body = _json_body(request, "model", "messages")
    return json_reply(200, {"input_tokens": _input_tokens(body)})


def _list_models(request: MockRequest, output_tokens: int) -> Reply:
    visible = [m for model_id, m in _MODEL_OBJECTS.items() if may_use_model(request.key, model_id)]
    if len(visible) == len(_MODEL_OBJECTS):
        return Reply(200, _MODEL_LIST_BODY)
    return json_reply(
        200, {"data": visible, "has_more": False, "first_id": visible[0]["id"], "last_id": visible[-1]["id"]}
    )


def _retrieve_model(request: MockRequest, output_tokens: int) -> Reply:
    model_id = request.path.removeprefix("/v1/models/")
    model = _MODEL_OBJECTS.get(model_id)
    if model is None or not may_use_model(request.key, model_id):
        raise EndpointError(f"model: {model_id}", 404, "not_found_error")
    return json_reply(200, model)


_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/messages"): _messages,
    ("POST", "/v1/messages/count_tokens"): _count_tokens,
    ("GET", "/v1/models"): _list_models,
}
