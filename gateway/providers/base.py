"""What a provider must tell the relay, and the rate-limit header arithmetic they share.

A provider knows how to put a key on a request, how to read usage from a reply
(whole or streamed), and what an upstream failure says about the key that got
it. One protocol, one module per provider, like httpx's transports.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

import msgspec

from gateway.providers.scrub import scrub_secret
from keypool import KeyLease, RateBudget, Usage

__all__ = ["KeyVerdict", "Provider", "StreamUsageReader", "scrub_secret"]


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """What an upstream failure says about the key: rest it, retire it, or just try again."""

    outcome: str  # keypool outcome: rate_limited | over_quota | revoked | failed
    cooldown_sec: float = 0.0
    reason: str = ""


class _ErrorDetail(msgspec.Struct):
    type: str | None = None
    code: str | int | None = None


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | str | None = None


_read_error = msgspec.json.Decoder(_ErrorBody).decode


def error_kind(body: bytes) -> tuple[str, str]:
    """The `error.type` and `error.code` of an upstream error reply ("" when absent or unreadable).

    Only these machine-set fields may say something about the key: the message text can echo
    what the client sent, so nothing ever matches on it.
    """
    try:
        detail = _read_error(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "", ""
    if not isinstance(detail, _ErrorDetail):
        return "", ""
    return detail.type or "", str(detail.code) if detail.code is not None else ""


class StreamUsageReader(Protocol):
    usage: Usage | None  # what upstream has reported so far
    complete: bool  # upstream's final usage arrived: nothing needs estimating

    def read(self, event: bytes) -> bool:
        """Take usage from one SSE event; False when the event must not reach the client."""
        ...


class Provider(Protocol):
    name: str
    base_url: str

    def auth_headers(self, lease: KeyLease, client_headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]: ...

    def usage_from_body(self, body: bytes) -> Usage | None: ...

    def stream_reader(self, drop_usage_chunk: bool) -> StreamUsageReader: ...

    def stream_text(self, events: list[bytes]) -> str:
        """The answer's text in these stream events (content, tool arguments), to count what was relayed."""
        ...

    def judge_failure(self, status: int, headers: dict[str, str], body: bytes) -> KeyVerdict | None:
        """None when the failure is the client's own (relay it unchanged); else what to do with the key."""
        ...

    def rate_budget(self, headers: dict[str, str]) -> RateBudget | None:
        """The key's remaining upstream budget, from a successful reply's rate-limit headers.

        `headers` holds only those, the ones whose names contain `ratelimit` (gateway/relay.py), lower-case.
        """
        ...


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations: `20s`, `6m0s`, `1h2m3.5s`, `120ms`; a bare number is seconds."""
    text = text.strip()
    if not text:  # the header was absent
        return None
    if not text[-1].isalpha():  # a unit ends every duration; an exception per header is a request's microsecond
        try:
            return _finite(float(text))
        except ValueError:
            return None
    parts = _DURATION_PART.findall(text)
    if not parts:
        return None
    return _finite(sum(float(value) * _UNIT[unit] for value, unit in parts))


def _finite(seconds: float) -> float | None:
    """A header's number, unless it is one no arithmetic survives (`inf`, `nan`, `1e999`)."""
    return seconds if math.isfinite(seconds) else None


def seconds_until(timestamp: str) -> float | None:
    """Seconds from now until an RFC 3339 or HTTP date."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(timestamp)
        except (TypeError, ValueError):
            return None
    return moment.timestamp() - time.time()


def retry_after_sec(headers: dict[str, str]) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if "retry-after-ms" in headers:
        try:
            return _finite(float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _finite(float(value))
    except ValueError:
        return seconds_until(value)


def most_precise(retry_after: float | None, resets: list[float]) -> float | None:
    """The rest a 429 asks for, as precisely as the reply gives it.

    `retry-after` is often whole seconds, rounded down from the real reset; a
    budget reset in the same reply that falls within that second says it
    precisely (1 s against 1.3 s), and a key brought back at the rounded time
    would only earn another 429.
    """
    if retry_after is None:
        return None
    finer = [r for r in resets if retry_after <= r < retry_after + 1]
    return max(finer) if finer else retry_after


def bounded_cooldown(seconds: float | None, maximum: float) -> float:
    """A rest long enough to matter and never longer than the operator allows."""
    if seconds is None:
        seconds = 5.0
    return min(max(seconds, 0.5), maximum)


# Where a request's prompt is, in any of the APIs; and what inside it is not text a model reads.
_PROMPT_FIELDS = ("messages", "system", "prompt", "input", "instructions", "tools", "functions")
_NOT_PROMPT = frozenset({"role", "type", "id", "tool_call_id", "tool_use_id", "url", "data", "media_type",
                         "detail", "file_id", "cache_control"})


def prompt_text(body: bytes) -> str:
    """The text of a request that a model reads as its prompt, for an estimate of its tokens."""
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return ""
    if not isinstance(payload, dict):
        return ""
    parts: list[str] = []
    pending = [payload[name] for name in _PROMPT_FIELDS if name in payload]
    while pending:  # a walk, not recursion: the body was already accepted at any nesting it had
        value = pending.pop()
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(v for k, v in value.items() if k not in _NOT_PROMPT)
    return "\n".join(reversed(parts))


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (ValueError, OverflowError):  # "1e999" is a float, but no count
        return None


def budget_from(
    remaining: str | None,
    full_reset_sec: float | None,
    tokens_remaining: str | None,
    tokens_full_reset_sec: float | None,
) -> RateBudget | None:
    """A RateBudget from what a reply said.

    Providers report when the budget is *fully* replenished. A spent key is held
    back until then, not until the first unit might refill: under a rolling
    window that first unit frees only when the oldest request ages out, and
    under a refilling bucket the whole budget is back by then, so the key
    serves a full budget per window either way — in bursts — and never earns
    a 429 by being offered too soon.
    """
    left = _int(remaining)
    if left is None and _int(tokens_remaining) is None:
        return None
    requests_reset = -1
    if left is not None and full_reset_sec is not None:
        requests_reset = int(max(full_reset_sec, 0) * 1000)
    tokens_left = _int(tokens_remaining)
    tokens_reset = -1
    if tokens_left is not None and tokens_full_reset_sec is not None:
        tokens_reset = int(max(tokens_full_reset_sec, 0) * 1000)
    return RateBudget(
        requests_remaining=left if left is not None else -1,
        requests_reset_in_ms=requests_reset,
        tokens_remaining=tokens_left if tokens_left is not None else -1,
        tokens_reset_in_ms=tokens_reset,
    )
