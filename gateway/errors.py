"""Errors in the client's dialect.

Every refusal poolgate makes is a GatewayError with a meaning (`kind`) and a
status; rendering turns it into the body an OpenAI or an Anthropic client
expects, so official SDKs raise their usual exception classes.
"""

from __future__ import annotations

import msgspec

from queues.waiting import NoKeyForFamily, QueueRefusal, QueueTimeout, TooManyWaiting

OPENAI = "openai"
ANTHROPIC = "anthropic"

# kind -> (status, OpenAI error type, OpenAI code, Anthropic error type)
_KINDS: dict[str, tuple[int, str, str | None, str]] = {
    "invalid_request": (400, "invalid_request_error", None, "invalid_request_error"),
    "authentication": (401, "invalid_request_error", "invalid_api_key", "authentication_error"),
    # an App Store session expired or revoked: Pico's clients sign in again (gateway/gatekeeper.py)
    "session_expired": (407, "invalid_request_error", "session_expired", "authentication_error"),
    "permission": (403, "permission_error", "endpoint_not_allowed", "permission_error"),
    "user_refused": (403, "permission_error", "user_token_refused", "permission_error"),
    "banned": (403, "permission_error", "banned", "permission_error"),
    # request policy (gateway/policy.py, gateway/blocks.py)
    "context_length_exceeded": (400, "invalid_request_error", "context_length_exceeded", "invalid_request_error"),
    "prompt_rejected": (403, "permission_error", "prompt_rejected", "permission_error"),
    "blocked_origin": (403, "permission_error", "blocked_origin", "permission_error"),
    "blocked_address": (403, "permission_error", "blocked_address", "permission_error"),
    "not_found": (404, "invalid_request_error", "unknown_url", "not_found_error"),
    "too_large": (413, "invalid_request_error", "request_too_large", "request_too_large"),
    "rate_limited": (429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    "quota_exceeded": (429, "insufficient_quota", "quota_exceeded", "rate_limit_error"),
    # money (accounts/budgets.py): the monthly budget is spent; a model with no price for a user with a budget
    "budget_exceeded": (429, "insufficient_quota", "budget_exceeded", "rate_limit_error"),
    "model_not_priced": (403, "permission_error", "model_not_priced", "permission_error"),
    "upstream_failed": (502, "server_error", "upstream_error", "api_error"),
    "no_key": (503, "server_error", "no_key_available", "overloaded_error"),
    "store_unavailable": (503, "server_error", "store_unavailable", "api_error"),
    "queue_timeout": (504, "server_error", "queue_timeout", "timeout_error"),
}


class GatewayError(Exception):
    def __init__(
        self, kind: str, message: str, *, retry_after_sec: float | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (), param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_sec = retry_after_sec
        self.headers = headers  # sent with the error (the proxy's own x-ratelimit-* when it limits)
        self.param = param  # the one request field at fault, as OpenAI names it (Anthropic's errors have no such)

    @property
    def status(self) -> int:
        return _KINDS[self.kind][0]


def render_error(dialect: str, error: GatewayError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body) for the error, in the dialect of the route it was raised on."""
    status, openai_type, openai_code, anthropic_type = _KINDS[error.kind]
    if dialect == ANTHROPIC:
        payload: dict[str, object] = {
            "type": "error",
            "error": {"type": anthropic_type, "message": error.message},
        }
    else:
        payload = {
            "error": {"message": error.message, "type": openai_type, "param": error.param, "code": openai_code}
        }
    body = msgspec.json.encode(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.retry_after_sec is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after_sec + 0.499))).encode()))
    headers.extend(error.headers)
    return status, headers, body


_REFUSAL_KINDS: dict[type[QueueRefusal], str] = {
    NoKeyForFamily: "no_key",
    QueueTimeout: "queue_timeout",
    TooManyWaiting: "rate_limited",
}


def refusal_error(refusal: QueueRefusal) -> GatewayError:
    """A lower layer's refusal as the error the client is told; the one place they are mapped."""
    return GatewayError(_REFUSAL_KINDS[type(refusal)], refusal.message, retry_after_sec=refusal.retry_after_sec)
