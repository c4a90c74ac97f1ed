"""How a Responses API stream is told it failed: its own `error` and `response.failed` events.

Chat-completions streams carry an error as `data: {"error": {...}}`; the
Responses API has typed events instead, and the official SDKs read that other
shape as an exception rather than as events. So once a `/v1/responses` stream
has begun, an error ends it the way OpenAI ends one: an `error` event, then
`response.failed` with a response whose `status` is `failed`, numbered on
from the last event relayed (`ClientLink` notes it), so no number repeats.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec

# Error types and codes that make a failed response's `error.code` "rate_limit_exceeded" (else "server_error",
# the other of the API's codes that fits what a gateway can report).
_RATE_LIMITED_TYPES = frozenset({"rate_limit_error", "rate_limit_exceeded", "insufficient_quota"})


def failure_events(error_body: bytes, *, model: str | None, first_sequence_number: int) -> bytes:
    """The SSE events that end a Responses stream, from an error body in OpenAI's `{"error": {...}}` shape."""
    message, kind, code, param = _error_fields(error_body)
    error_event = {
        "type": "error", "code": code or kind, "message": message, "param": param,
        "sequence_number": first_sequence_number,
    }
    failed_code = "rate_limit_exceeded" if {kind, code} & _RATE_LIMITED_TYPES else "server_error"
    failed_event = {
        "type": "response.failed",
        "sequence_number": first_sequence_number + 1,
        "response": _failed_response(model, failed_code, message),
    }
    return _event("error", error_event) + _event("response.failed", failed_event)


def _error_fields(body: bytes) -> tuple[str, str, str | None, str | None]:
    """(message, type, code, param) of an error body; a body that is no such error is reported as upstream's."""
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        payload = None
    error: Any = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "The upstream API failed while answering.", "server_error", "upstream_error", None
    message = error.get("message")
    kind, code, param = error.get("type"), error.get("code"), error.get("param")
    return (
        message if isinstance(message, str) and message else "The request failed.",
        kind if isinstance(kind, str) else "server_error",
        code if isinstance(code, str) else None,
        param if isinstance(param, str) else None,
    )


def _failed_response(model: str | None, code: str, message: str) -> dict[str, Any]:
    """A Response object as OpenAI sends it in `response.failed`: no output, the error, status `failed`."""
    return {
        "id": f"resp_{secrets.token_hex(24)}",  # poolgate's own: upstream never created one
        "object": "response",
        "created_at": int(time.time()),
        "status": "failed",
        "error": {"code": code, "message": message},
        "incomplete_details": None,
        "instructions": None,
        "model": model or "",
        "output": [],
        "parallel_tool_calls": True,
        "temperature": None,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "metadata": {},
        "usage": None,
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
