"""OpenAI, and any OpenAI-compatible API reached through `OPENAI_BASE_URL`."""

from __future__ import annotations

import re

import msgspec

from gateway.providers.base import (
    KeyVerdict,
    bounded_cooldown,
    budget_from,
    error_kind,
    most_precise,
    parse_duration,
    retry_after_sec,
)
from gateway.sse import event_data
from keypool import FAILED, OVER_QUOTA, RATE_LIMITED, REVOKED, KeyLease, RateBudget, Usage

_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
# error.code / error.type values by which OpenAI says the key or its account is finished.
_REVOKED_CODES = frozenset({"invalid_api_key", "account_deactivated"})
_OVER_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})


class _Cached(msgspec.Struct):
    cached_tokens: int = 0


class _Tokens(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_tokens: int = 0  # the Responses API's names
    output_tokens: int = 0
    prompt_tokens_details: _Cached | None = None  # cache reads, part of prompt_tokens
    input_tokens_details: _Cached | None = None  # the Responses API's name


class _WithUsage(msgspec.Struct):
    usage: _Tokens | None = None
    response: _WithUsage | None = None  # Responses API stream events nest the response


_read_usage = msgspec.json.Decoder(_WithUsage).decode


class _Function(msgspec.Struct):
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    text: str | None = None  # the legacy completions API


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    delta: str | dict[str, object] | None = None  # Responses API: `response.*.delta` events carry text


_read_chunk = msgspec.json.Decoder(_Chunk).decode


def _chunk_text(chunk: _Chunk) -> list[str]:
    parts = [chunk.delta] if isinstance(chunk.delta, str) else []
    for choice in chunk.choices or ():
        if choice.text:
            parts.append(choice.text)
        delta = choice.delta
        if delta is None:
            continue
        parts.extend(text for text in (delta.content, delta.refusal) if text)
        parts.extend(call.function.arguments for call in delta.tool_calls or ()
                     if call.function is not None and call.function.arguments)
    return parts


def _usage_of(payload: _WithUsage) -> Usage | None:
    tokens = payload.usage or (payload.response.usage if payload.response else None)
    if tokens is None:
        return None
    details = tokens.prompt_tokens_details or tokens.input_tokens_details
    return Usage(tokens.prompt_tokens + tokens.input_tokens, tokens.completion_tokens + tokens.output_tokens,
                 cache_read_tokens=details.cached_tokens if details is not None else 0)


class OpenAIStreamReader:
    """Usage from the stream's usage chunk (or `response.completed`); drops the chunk poolgate asked for."""

    def __init__(self, drop_usage_chunk: bool) -> None:
        self._drop = drop_usage_chunk
        self.usage: Usage | None = None

    @property
    def complete(self) -> bool:
        return self.usage is not None  # OpenAI reports usage once, at the very end

    def read(self, event: bytes) -> bool:
        if not _USAGE.search(event):
            return True
        data = event_data(event)
        try:
            usage = _usage_of(_read_usage(data))
        except msgspec.DecodeError:
            return True
        if usage is not None:
            self.usage = usage
            if self._drop and _EMPTY_CHOICES.search(event):
                return False
        return True


class OpenAIProvider:
    name = "openai"

    def __init__(self, base_url: str, cooldown_max_sec: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._cooldown_max = cooldown_max_sec

    def auth_headers(self, lease: KeyLease, client_headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        headers = [(b"authorization", b"Bearer " + lease.secret.encode())]
        if lease.organization:
            headers.append((b"openai-organization", lease.organization.encode()))
        return headers

    def usage_from_body(self, body: bytes) -> Usage | None:
        try:
            return _usage_of(_read_usage(body))
        except msgspec.DecodeError:
            return None

    def stream_reader(self, drop_usage_chunk: bool) -> OpenAIStreamReader:
        return OpenAIStreamReader(drop_usage_chunk)

    def stream_text(self, events: list[bytes]) -> str:
        parts: list[str] = []
        for event in events:
            data = event_data(event)
            if not data or data == b"[DONE]":
                continue
            try:
                parts.extend(_chunk_text(_read_chunk(data)))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        return "".join(parts)

    def judge_failure(self, status: int, headers: dict[str, str], body: bytes) -> KeyVerdict | None:
        # Only error.code / error.type say anything about the account; the message may echo the client.
        kind, code = error_kind(body)
        labels = {kind, code}
        if status in (401, 403, 429) and labels & _REVOKED_CODES:
            return KeyVerdict(REVOKED, reason=f"upstream: {status} {(labels & _REVOKED_CODES).pop()}")
        if status in (403, 429) and labels & _OVER_QUOTA_CODES:
            return KeyVerdict(OVER_QUOTA, reason=f"upstream: {status} {(labels & _OVER_QUOTA_CODES).pop()}")
        if status == 429:
            return KeyVerdict(RATE_LIMITED, bounded_cooldown(self._cooldown_hint(headers), self._cooldown_max))
        if status == 401:  # not a code that condemns the key: try another, keep this one
            return KeyVerdict(FAILED, reason="upstream: 401 without an invalid-key code")
        if status >= 500 or status == 408:
            return KeyVerdict(FAILED, reason=f"upstream: {status}")
        return None  # a 403 without an account code, a 400...: the client's own

    def rate_budget(self, headers: dict[str, str]) -> RateBudget | None:
        return budget_from(
            headers.get("x-ratelimit-remaining-requests"),
            parse_duration(headers.get("x-ratelimit-reset-requests", "")),
            headers.get("x-ratelimit-remaining-tokens"),
            parse_duration(headers.get("x-ratelimit-reset-tokens", "")),
        )

    @staticmethod
    def _cooldown_hint(headers: dict[str, str]) -> float | None:
        hint = retry_after_sec(headers)
        if hint is not None:
            resets = [parse_duration(headers.get(f"x-ratelimit-reset-{kind}", "")) for kind in ("requests", "tokens")]
            return most_precise(hint, [r for r in resets if r is not None])
        # Rest until whichever exhausted budget resets.
        waits = []
        for kind in ("requests", "tokens"):
            if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
                if reset is not None:
                    waits.append(reset)
        return max(waits) if waits else None
