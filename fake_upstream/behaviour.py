"""How the mock treats a key, decided by the key's own text, and its rate limiter.

A test picks an upstream failure by naming its key: `sk-revoked-1` is refused,
`sk-rpm3-a` may make three requests a minute, `sk-delay200-noquota` is slow and
out of credit. Nothing has to be configured, and the gateway under test cannot
tell these keys from real ones that misbehave the same way.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

WINDOW_SECONDS = 60.0
# The limit reported for a `ratelimited` key that names no rpm of its own: the
# figure in the real error message these keys imitate.
RATELIMITED_DEFAULT_LIMIT = 3
# Token limits are reported, not enforced; a generous multiple keeps the
# figures plausible next to the request limit.
TOKENS_PER_REQUEST_ALLOWANCE = 10_000

_RPM = re.compile(r"rpm(\d+)")
_DELAY = re.compile(r"delay(\d+)")


class Refusal(enum.Enum):
    """Why a key is refused, most fundamental first: a revoked key is never also over its limit."""

    REVOKED = "revoked"
    FORBIDDEN = "forbidden"
    NO_QUOTA = "noquota"
    FAILS = "fail500"
    OVERLOADED = "overloaded"
    RATE_LIMITED = "ratelimited"


_KEY_REFUSALS = tuple(r for r in Refusal if r is not Refusal.RATE_LIMITED)


@dataclass(frozen=True, slots=True)
class KeyBehaviour:
    refusal: Refusal | None  # refused outright, whatever the request
    always_rate_limited: bool
    rpm: int  # requests per rolling minute; 0 = unlimited
    delay_ms: float
    echoes_key: bool = False  # `echokey`: the key comes back in every channel (`leaks.py`)
    redirects: bool = False  # `redirect`: every request is answered with a 302 carrying the key
    fails_mid_stream: bool = False  # `streamerror`: a stream starts (200), then ends in the API's error event


@lru_cache(maxsize=4096)
def behaviour_for_key(key: str, default_rpm: int) -> KeyBehaviour:
    """Read a key's behaviour from its text (case-insensitive); cached because keys repeat."""
    text = key.lower()
    refusal = next((r for r in _KEY_REFUSALS if r.value in text), None)
    rpm_match = _RPM.search(text)
    delay_match = _DELAY.search(text)
    return KeyBehaviour(
        refusal=refusal,
        always_rate_limited="ratelimited" in text,
        rpm=int(rpm_match.group(1)) if rpm_match else default_rpm,
        delay_ms=float(delay_match.group(1)) if delay_match else 0.0,
        echoes_key="echokey" in text,
        redirects="redirect" in text,
        fails_mid_stream="streamerror" in text,
    )


@dataclass(frozen=True, slots=True)
class RateStatus:
    """A limited key's standing after this request, as the rate-limit headers report it."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: float  # until the window is empty again ("fully replenished")
    retry_after_seconds: int  # until a slot frees, rounded up; 0 when allowed
    tokens_limit: int
    tokens_remaining: int

    @property
    def used(self) -> int:
        return self.limit - self.remaining


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """What the mock decided about a request's key before looking at the request itself."""

    refusal: Refusal | None
    rate: RateStatus | None  # None when the key has no limit, so no rate-limit headers


class _KeyWindow:
    """One key's requests in the last minute, with their tokens summed as they come and go."""

    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.requests: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def forget_before(self, cutoff: float) -> None:
        while self.requests and self.requests[0][0] <= cutoff:
            self.tokens -= self.requests.popleft()[1]

    def add(self, now: float, tokens: int) -> None:
        self.requests.append((now, tokens))
        self.tokens += tokens


class RollingMinuteLimiter:
    """Counts each key's requests (and rough tokens) over the last minute."""

    def __init__(self) -> None:
        self._windows: dict[str, _KeyWindow] = {}

    def admit(self, key: str, limit: int, tokens: int, now: float) -> RateStatus:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _KeyWindow()
        window.forget_before(now - WINDOW_SECONDS)
        requests = window.requests
        allowed = len(requests) < limit
        retry_after = 0
        if allowed:
            window.add(now, tokens)
        else:
            retry_after = max(1, math.ceil(requests[0][0] + WINDOW_SECONDS - now))
        tokens_limit = limit * TOKENS_PER_REQUEST_ALLOWANCE
        return RateStatus(
            allowed=allowed,
            limit=limit,
            remaining=limit - len(requests),
            reset_seconds=requests[-1][0] + WINDOW_SECONDS - now if requests else 0.0,
            retry_after_seconds=retry_after,
            tokens_limit=tokens_limit,
            tokens_remaining=max(0, tokens_limit - window.tokens),
        )

    def reset(self) -> None:
        self._windows.clear()


class KeyGate:
    """Decides, per key, whether a request is refused and how it stands against its limit."""

    def __init__(self, default_rpm: int = 0) -> None:
        self.default_rpm = default_rpm
        self._limiter = RollingMinuteLimiter()
        self._revived: set[str] = set()
        self._revoked: set[str] = set()

    def behaviour(self, key: str) -> KeyBehaviour:
        behaviour = behaviour_for_key(key, self.default_rpm)
        if key in self._revoked:  # its owner revoked it while it was in use
            return dataclasses.replace(behaviour, refusal=Refusal.REVOKED, always_rate_limited=False)
        if key in self._revived:
            # Its owner fixed billing or un-revoked it: no refusal any more, limits and latency as before.
            return dataclasses.replace(behaviour, refusal=None, always_rate_limited=False, redirects=False)
        return behaviour

    def revive(self, key: str) -> None:
        """From now on the key is refused no more, whatever its text says (until reset)."""
        self._revived.add(key)
        self._revoked.discard(key)

    def revoke(self, key: str) -> None:
        """From now on the key is refused as revoked (401), whatever its text says (until reset)."""
        self._revoked.add(key)
        self._revived.discard(key)

    def check(self, key: str, estimated_tokens: int) -> KeyVerdict:
        behaviour = self.behaviour(key)
        if behaviour.refusal is not None:
            return KeyVerdict(behaviour.refusal, None)
        if behaviour.always_rate_limited:
            limit = behaviour.rpm or RATELIMITED_DEFAULT_LIMIT
            tokens_limit = limit * TOKENS_PER_REQUEST_ALLOWANCE
            status = RateStatus(
                allowed=False,
                limit=limit,
                remaining=0,
                reset_seconds=1.0,
                retry_after_seconds=1,
                tokens_limit=tokens_limit,
                tokens_remaining=tokens_limit,
            )
            return KeyVerdict(Refusal.RATE_LIMITED, status)
        if behaviour.rpm <= 0:
            return KeyVerdict(None, None)
        status = self._limiter.admit(key, behaviour.rpm, estimated_tokens, time.monotonic())
        return KeyVerdict(None if status.allowed else Refusal.RATE_LIMITED, status)

    def reset(self) -> None:
        self._limiter.reset()
        self._revived.clear()
        self._revoked.clear()
