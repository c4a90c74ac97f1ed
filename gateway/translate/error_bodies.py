"""Upstream error bodies in the client's dialect: a whole reply's, and the event that ends a broken stream.

Only the machine-set type and the message are carried over; the status of a
whole reply is kept as upstream gave it.
"""

from __future__ import annotations

from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

# Anthropic error.type -> OpenAI error.type
_TO_OPENAI = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "api_error": "server_error",
    "overloaded_error": "server_error",
    "timeout_error": "server_error",
    "billing_error": "insufficient_quota",
}
# OpenAI error.type -> Anthropic error.type
_TO_ANTHROPIC = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
    "insufficient_quota": "billing_error",
    "server_error": "api_error",
}
_FALLBACK_MESSAGE = "The upstream API failed while answering."


def _error_of(body: bytes) -> tuple[str, str]:
    """(type, message) of either provider's error body; a body that is no error is upstream failing."""
    try:
        payload: Any = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", _FALLBACK_MESSAGE
    kind, message = error.get("type"), error.get("message")
    return (kind if isinstance(kind, str) else "",
            message if isinstance(message, str) and message else _FALLBACK_MESSAGE)


def openai_error(anthropic_body: bytes) -> dict[str, Any]:
    """An Anthropic error body as OpenAI's `{"error": {...}}`; the Anthropic type stays readable as `code`."""
    kind, message = _error_of(anthropic_body)
    return {"error": {"message": message, "type": _TO_OPENAI.get(kind, "server_error"), "param": None,
                      "code": kind or None}}


def anthropic_error(openai_body: bytes) -> dict[str, Any]:
    """An OpenAI error body as Anthropic's `{"type": "error", "error": {...}}`."""
    kind, message = _error_of(openai_body)
    return {"type": "error", "error": {"type": _TO_ANTHROPIC.get(kind, "api_error"), "message": message}}


def openai_error_body(anthropic_body: bytes) -> bytes:
    return _encode(openai_error(anthropic_body))


def anthropic_error_body(openai_body: bytes) -> bytes:
    return _encode(anthropic_error(openai_body))


def openai_error_event(anthropic_data: bytes) -> bytes:
    """The chunk that tells an OpenAI stream's reader it failed (the SDKs raise on a chunk with `error`)."""
    return b"data: " + openai_error_body(anthropic_data) + b"\n\n"


def anthropic_error_event(openai_data: bytes) -> bytes:
    return b"event: error\ndata: " + anthropic_error_body(openai_data) + b"\n\n"
