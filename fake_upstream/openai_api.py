"""The OpenAI half of the mock upstream: who may ask, how refusals look, which headers go back.

Error bodies and headers follow what api.openai.com sends, so a client or
gateway that handles the mock handles the real API. The endpoints themselves
live in `openai_endpoints`. Any other /v1 path is answered with a 200
placeholder rather than refused: the gateway's tests read the mock's recording
to prove such paths were never forwarded, so the mock must not hide them by
refusing first.
"""

from __future__ import annotations

import time

from .accounts import ORGANIZATION, belongs_to
from .behaviour import KeyGate, RateStatus, Refusal
from .exchange import AnyReply, Handler, MockRequest, NotJsonObject, Reply, find_handler, new_id, parse_json_object
from .openai_chat import chat_completions
from .openai_endpoints import ENDPOINTS, InvalidRequest, error_reply, retrieve_model
from .openai_responses import responses

ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/chat/completions"): chat_completions,
    ("POST", "/v1/responses"): responses,
    **ENDPOINTS,
}
OPENAI_ONLY_PATHS = frozenset(path for _, path in ROUTES if path != "/v1/models")

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)


def answer_openai(request: MockRequest, gate: KeyGate, output_tokens: int) -> AnyReply:
    """Answer one OpenAI-dialect request: route, credential, key behaviour, then the endpoint."""
    started = time.perf_counter()
    handler = find_handler(request, ROUTES, retrieve_model)
    verdict = None
    if handler is None:
        reply: AnyReply = error_reply(
            404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error"
        )
    elif request.key is None:
        reply = error_reply(401, _NO_KEY, "invalid_request_error")
    elif not belongs_to(request.key, request.headers.get("openai-organization", ORGANIZATION)):
        reply = error_reply(
            401, "OpenAI-Organization header should match organization for API key", "invalid_request_error",
            None, "mismatched_organization",
        )
    else:
        verdict = gate.check(request.key, len(request.body) // 4)
        if verdict.refusal is not None:
            reply = _refusal_reply(verdict.refusal, request, verdict.rate)
        else:
            try:
                reply = handler(request, output_tokens)
            except InvalidRequest as invalid:
                reply = invalid.reply
    if verdict is not None and verdict.rate is not None:
        reply.headers.extend(rate_limit_headers(verdict.rate))
        if not verdict.rate.allowed:
            reply.headers.append(("retry-after", str(verdict.rate.retry_after_seconds)))
    reply.headers.append(("x-request-id", new_id("req_")))
    reply.headers.append(("openai-organization", request.headers.get("openai-organization", ORGANIZATION)))
    reply.headers.append(("openai-version", "2020-10-01"))
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    reply.headers.append(("openai-processing-ms", str(elapsed_ms)))
    return reply


def _refusal_reply(refusal: Refusal, request: MockRequest, rate: RateStatus | None) -> Reply:
    key = request.key or ""
    if refusal is Refusal.REVOKED:
        return error_reply(
            401,
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            "invalid_api_key",
        )
    if refusal is Refusal.FORBIDDEN:
        return error_reply(
            403,
            "You have insufficient permissions for this operation. Missing scopes: model.request. "
            "Check that you have the correct role in your organization (Reader, Writer, Owner) and "
            "project (Member, Owner), and if you're using a restricted API key, that it has the "
            "necessary scopes.",
            "permission_error",
        )
    if refusal is Refusal.NO_QUOTA:
        return error_reply(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            None,
            "insufficient_quota",
        )
    if refusal is Refusal.FAILS:
        return error_reply(
            500, "The server had an error while processing your request. Sorry about that!", "server_error"
        )
    if refusal is Refusal.OVERLOADED:
        return error_reply(503, "The engine is currently overloaded, please try again later.", "server_error")
    assert rate is not None, "a rate-limit refusal always carries the key's standing"
    return error_reply(
        429,
        f"Rate limit reached for {_model_named_in(request)} in organization {ORGANIZATION} on "
        f"requests per min (RPM): Limit {rate.limit}, Used {rate.used}, Requested 1. Please try "
        f"again in {go_duration(rate.retry_after_seconds)}. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        None,
        "rate_limit_exceeded",
    )


def mask_key(key: str) -> str:
    """Show only a key's last four characters, as the real error does."""
    prefix = "sk-" if key.startswith("sk-") else ""
    return f"{prefix}...{key[-4:]}"


def _model_named_in(request: MockRequest) -> str:
    try:
        model = parse_json_object(request.body).get("model")
    except NotJsonObject:
        model = None
    return model if isinstance(model, str) else "gpt-4o"


def rate_limit_headers(rate: RateStatus) -> list[tuple[str, str]]:
    # OpenAI's token bucket refills over a minute, so refilling what was used
    # takes that share of the minute.
    tokens_used = rate.tokens_limit - rate.tokens_remaining
    tokens_reset = 60.0 * tokens_used / max(rate.tokens_limit, 1)
    return [
        ("x-ratelimit-limit-requests", str(rate.limit)),
        ("x-ratelimit-remaining-requests", str(rate.remaining)),
        ("x-ratelimit-reset-requests", go_duration(rate.reset_seconds)),
        ("x-ratelimit-limit-tokens", str(rate.tokens_limit)),
        ("x-ratelimit-remaining-tokens", str(rate.tokens_remaining)),
        ("x-ratelimit-reset-tokens", go_duration(tokens_reset)),
    ]


def go_duration(seconds: float) -> str:
    """Format a duration as OpenAI's headers do (Go's style): `6m0s`, `20s`, `1.5s`, `120ms`."""
    millis = max(0, round(seconds * 1000))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    text = f"{secs}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text
