"""Anthropic's Messages API."""

from __future__ import annotations

import dataclasses
import re

import msgspec

from gateway.providers.base import (
    KeyVerdict,
    bounded_cooldown,
    budget_from,
    error_kind,
    most_precise,
    retry_after_sec,
    seconds_until,
)
from gateway.sse import event_data
from keypool import FAILED, OVER_QUOTA, RATE_LIMITED, REVOKED, KeyLease, RateBudget, Usage
from keypool.checks import anthropic_tier

DEFAULT_VERSION = b"2023-06-01"
_USAGE = re.compile(rb'"usage"\s*:\s*\{')


class _Tokens(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def input_total(self) -> int | None:
        if self.input_tokens is None:
            return None
        return self.input_tokens + (self.cache_creation_input_tokens or 0) + (self.cache_read_input_tokens or 0)


class _Message(msgspec.Struct):
    usage: _Tokens | None = None


class _WithUsage(msgspec.Struct):
    usage: _Tokens | None = None
    message: _Message | None = None  # message_start nests the message


_read = msgspec.json.Decoder(_WithUsage).decode


class _BlockDelta(msgspec.Struct):
    text: str | None = None
    partial_json: str | None = None  # a tool call's input, as it is written
    thinking: str | None = None


class _DeltaEvent(msgspec.Struct):
    delta: _BlockDelta | None = None


_read_delta = msgspec.json.Decoder(_DeltaEvent).decode


class AnthropicStreamReader:
    """Input tokens from `message_start`, output tokens (cumulative) from `message_delta`."""

    def __init__(self) -> None:
        self._input = 0
        self._output = 0
        self._cache_read = 0
        self._cache_write = 0
        self.usage: Usage | None = None
        self.complete = False  # `message_delta` carries the final output count

    def read(self, event: bytes) -> bool:
        if not _USAGE.search(event):
            return True
        data = event_data(event)
        try:
            payload = _read(data)
        except msgspec.DecodeError:
            return True
        tokens = payload.usage or (payload.message.usage if payload.message else None)
        if tokens is not None:
            total_in = tokens.input_total()
            if total_in is not None:
                self._input = total_in
                self._cache_read = tokens.cache_read_input_tokens or 0
                self._cache_write = tokens.cache_creation_input_tokens or 0
            if tokens.output_tokens is not None:
                self._output = tokens.output_tokens
                self.complete = self.complete or payload.usage is not None
            self.usage = Usage(self._input, self._output, self._cache_read, self._cache_write)
        return True


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, base_url: str, cooldown_max_sec: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._cooldown_max = cooldown_max_sec

    def auth_headers(self, lease: KeyLease, client_headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-api-key", lease.secret.encode())]
        if b"anthropic-version" not in client_headers:
            headers.append((b"anthropic-version", DEFAULT_VERSION))
        return headers

    def usage_from_body(self, body: bytes) -> Usage | None:
        try:
            tokens = _read(body).usage
        except msgspec.DecodeError:
            return None
        if tokens is None or tokens.input_total() is None:
            return None
        return Usage(tokens.input_total() or 0, tokens.output_tokens or 0,
                     cache_read_tokens=tokens.cache_read_input_tokens or 0,
                     cache_write_tokens=tokens.cache_creation_input_tokens or 0)

    def stream_reader(self, drop_usage_chunk: bool) -> AnthropicStreamReader:
        return AnthropicStreamReader()

    def stream_text(self, events: list[bytes]) -> str:
        parts: list[str] = []
        for event in events:
            if b"content_block_delta" not in event:
                continue
            try:
                delta = _read_delta(event_data(event)).delta
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if delta is not None:
                parts.extend(text for text in (delta.text, delta.partial_json, delta.thinking) if text)
        return "".join(parts)

    def judge_failure(self, status: int, headers: dict[str, str], body: bytes) -> KeyVerdict | None:
        # Only error.type says anything about the account; the message may echo the client.
        kind, _ = error_kind(body)
        if kind == "authentication_error" and status == 401:
            return KeyVerdict(REVOKED, reason="upstream: 401 authentication_error")
        if kind == "billing_error":
            return KeyVerdict(OVER_QUOTA, reason=f"upstream: {status} billing_error")
        if status == 429:
            return KeyVerdict(RATE_LIMITED, bounded_cooldown(self._cooldown_hint(headers), self._cooldown_max))
        if status == 401:  # no authentication_error: try another key, keep this one
            return KeyVerdict(FAILED, reason="upstream: 401 without authentication_error")
        if status >= 500 or status == 408:  # 529 is Anthropic's "overloaded"
            return KeyVerdict(FAILED, reason=f"upstream: {status}")
        # A 400 invalid_request_error, a 403 permission_error (a model or resource the request
        # named): the client's own, whatever the message says.
        return None

    def rate_budget(self, headers: dict[str, str]) -> RateBudget | None:
        """The budget, and the key's tier as its limits suggest: learned from real traffic, for free."""
        budget = budget_from(
            headers.get("anthropic-ratelimit-requests-remaining"),
            seconds_until(headers.get("anthropic-ratelimit-requests-reset", "")),
            headers.get("anthropic-ratelimit-tokens-remaining"),
            seconds_until(headers.get("anthropic-ratelimit-tokens-reset", "")),
        )
        tier = anthropic_tier(headers)
        return dataclasses.replace(budget, tier=tier) if budget is not None and tier else budget

    @staticmethod
    def _cooldown_hint(headers: dict[str, str]) -> float | None:
        hint = retry_after_sec(headers)
        kinds = ("requests", "tokens", "input-tokens", "output-tokens")
        if hint is not None:
            resets = [seconds_until(headers.get(f"anthropic-ratelimit-{kind}-reset", "")) for kind in kinds]
            return most_precise(hint, [r for r in resets if r is not None])
        waits = []
        for kind in kinds:
            if headers.get(f"anthropic-ratelimit-{kind}-remaining") == "0":
                reset = seconds_until(headers.get(f"anthropic-ratelimit-{kind}-reset", ""))
                if reset is not None:
                    waits.append(reset)
        return max(waits) if waits else None
