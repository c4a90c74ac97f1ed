"""The OpenAI endpoints the mock serves, with the real API's shapes and validation.

Each endpoint turns a request into a reply and nothing more: the credential,
the key's behaviour and the common headers are settled before and after, in
`openai_api.answer_openai`.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from typing import Any

from .accounts import may_use_model, organizations_body
from .exchange import (
    AnyReply,
    Handler,
    MockRequest,
    NotJsonObject,
    Reply,
    StreamReply,
    encode_json,
    json_reply,
    new_id,
    parse_json_object,
    sse_data,
)
from .fake_text import (
    completion_text,
    completion_tokens,
    count_text_tokens,
    output_length,
)
from .models import openai_knows

MODELS: tuple[tuple[str, int, str], ...] = (
    ("gpt-5", 1754425777, "system"),
    ("gpt-5-mini", 1754425928, "system"),
    ("gpt-5-nano", 1754426384, "system"),
    ("gpt-4o", 1715367049, "system"),
    ("gpt-4o-2024-08-06", 1722814719, "system"),
    ("gpt-4o-mini", 1721172741, "system"),
    ("gpt-4.1", 1744316542, "system"),
    ("gpt-4.1-mini", 1744318173, "system"),
    ("gpt-4.1-nano", 1744321707, "system"),
    ("gpt-4-turbo", 1712361441, "system"),
    ("gpt-3.5-turbo", 1677610602, "openai"),
    ("gpt-3.5-turbo-instruct", 1692901427, "system"),
    ("o1", 1734375816, "system"),
    ("o3-mini", 1737146383, "system"),
    ("o4-mini", 1744225351, "system"),
    ("text-embedding-3-small", 1705948997, "system"),
    ("text-embedding-3-large", 1705953180, "system"),
    ("text-embedding-ada-002", 1671217299, "openai-internal"),
    ("omni-moderation-latest", 1731689265, "system"),
    ("dall-e-3", 1698785189, "system"),
    ("whisper-1", 1677532384, "openai-internal"),
    ("tts-1", 1681940951, "openai-internal"),
)
_MODEL_OBJECTS = {
    name: {"id": name, "object": "model", "created": created, "owned_by": owner}
    for name, created, owner in MODELS
}
_MODEL_LIST_BODY = encode_json({"object": "list", "data": list(_MODEL_OBJECTS.values())})

SYSTEM_FINGERPRINT = "fp_mock0001"
EMBEDDING_SIZE = 8
_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)


class InvalidRequest(Exception):
    """A request the real API would answer with 400 invalid_request_error."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.reply = error_reply(status, message, "invalid_request_error", param, code)


def error_reply(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> Reply:
    return json_reply(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def json_body(request: MockRequest, *required: str) -> dict[str, Any]:
    try:
        body = parse_json_object(request.body)
    except NotJsonObject:
        raise InvalidRequest(_NOT_JSON) from None
    for name in required:
        if body.get(name) is None:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    model = body.get("model")
    if isinstance(model, str) and not (openai_knows(model) and may_use_model(request.key, model)):
        raise InvalidRequest(
            f"The model `{model}` does not exist or you do not have access to it.", None, "model_not_found", 404
        )
    return body


def stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether to stream, and whether the stream ends with a usage chunk."""
    stream = body.get("stream") is True
    options = body.get("stream_options")
    if options is not None and not stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        )
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    return stream, include_usage


def usage_of(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _list_models(request: MockRequest, output_tokens: int) -> Reply:
    visible = [m for name, m in _MODEL_OBJECTS.items() if may_use_model(request.key, name)]
    if len(visible) == len(_MODEL_OBJECTS):
        return Reply(200, _MODEL_LIST_BODY)
    return json_reply(200, {"object": "list", "data": visible})


def _organizations(request: MockRequest, output_tokens: int) -> Reply:
    return json_reply(200, organizations_body(request.key or ""))


def retrieve_model(request: MockRequest, output_tokens: int) -> Reply:
    name = request.path.removeprefix("/v1/models/")
    model = _MODEL_OBJECTS.get(name)
    if model is None or not may_use_model(request.key, name):
        return error_reply(
            404, f"The model '{name}' does not exist", "invalid_request_error", "model", "model_not_found"
        )
    return json_reply(200, model)


def closing_events(
    finishing_chunk: bytes, frame: dict[str, Any], usage: dict[str, Any] | None
) -> list[bytes]:
    """The end of an OpenAI stream: the finishing chunk, the usage chunk when asked for, `[DONE]`."""
    events = [finishing_chunk]
    if usage is not None:
        events.append(sse_data({**frame, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def _completions(request: MockRequest, output_tokens: int) -> AnyReply:
    body = json_body(request, "model")
    stream, include_usage = stream_options(body)
    count, capped = output_length(output_tokens, body.get("max_tokens", 16))
    finish = "length" if capped else "stop"
    usage = usage_of(max(1, count_text_tokens(body.get("prompt", ""))), count)
    frame: dict[str, Any] = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": str(body["model"]),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if not stream:
        choice = {"text": completion_text(count), "index": 0, "logprobs": None, "finish_reason": finish}
        return json_reply(200, {**frame, "choices": [choice], "usage": usage})
    if include_usage:
        frame["usage"] = None

    def chunk(text: str, finish_reason: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return sse_data({**frame, "choices": [choice]})

    return StreamReply(
        opening=[],
        tokens=[chunk(token) for token in completion_tokens(count)],
        closing=closing_events(chunk("", finish), frame, usage if include_usage else None),
    )


def _embeddings(request: MockRequest, output_tokens: int) -> Reply:
    body = json_body(request, "input", "model")
    inputs = body["input"]
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("'input' must be a non-empty string or array.", "input", "invalid_type")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        if not isinstance(item, str | list):
            raise InvalidRequest(
                "'input' must be a string, an array of strings or of tokens.", "input", "invalid_type"
            )
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += len(item) if isinstance(item, list) else max(1, len(text.split()))
        vector = embedding_for(text)
        encoded: Any = vector
        if as_base64:  # what the SDK asks for unless told otherwise: packed little-endian float32
            encoded = base64.b64encode(struct.pack(f"<{EMBEDDING_SIZE}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return json_reply(
        200,
        {
            "object": "list",
            "data": data,
            "model": str(body["model"]),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


def embedding_for(text: str) -> list[float]:
    """A deterministic vector in [-1, 1] for a text: same text, same vector."""
    digest = hashlib.blake2b(text.encode(), digest_size=EMBEDDING_SIZE).digest()
    return [round(byte / 127.5 - 1.0, 6) for byte in digest]


def _moderations(request: MockRequest, output_tokens: int) -> Reply:
    body = json_body(request, "input")
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    result = {
        "flagged": False,
        "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
        "category_scores": dict.fromkeys(_MODERATION_CATEGORIES, 1e-06),
        "category_applied_input_types": {name: ["text"] for name in _MODERATION_CATEGORIES},
    }
    return json_reply(
        200,
        {
            "id": new_id("modr-"),
            "model": str(body.get("model", "omni-moderation-latest")),
            "results": [result] * len(inputs),
        },
    )


# Chat completions and responses, with tools and structured output, live in `openai_chat` and
# `openai_responses`; `openai_api` joins the tables.
ENDPOINTS: dict[tuple[str, str], Handler] = {
    ("GET", "/v1/models"): _list_models,
    ("GET", "/v1/organizations"): _organizations,
    ("POST", "/v1/completions"): _completions,
    ("POST", "/v1/embeddings"): _embeddings,
    ("POST", "/v1/moderations"): _moderations,
}
