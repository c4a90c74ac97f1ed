"""Stage 1, route: which provider a request is for, and the upstream path it names.

The path is normalised before anything looks at it — percent-decoding repeated
until stable (`%2e`, `%2f`, `%252e`), backslashes, `//`, `.` and `..`, trailing
slashes, case — so that no spelling of a refused endpoint reaches the filter
looking like an allowed one. A doubled `/v1/v1/` is folded into one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from gateway.errors import ANTHROPIC, OPENAI, GatewayError


@dataclass(frozen=True, slots=True)
class Route:
    provider: str  # "openai" | "anthropic"; for by-model routes, the default until the body is read
    dialect: str  # error format the client expects
    path: str  # normalised, lower-case, without /v1: "chat/completions", "models/gpt-4o"
    original_path: str  # the same, in the client's case (model ids in paths keep their case)
    by_model: bool  # the root /v1 route: provider chosen by the body's model
    provider_route: bool = False  # /proxy/<provider>/v1: translates only with TRANSLATE_ON_PROVIDER_ROUTES


def normalise_path(raw: str) -> tuple[str, ...]:
    """Path segments after decoding and resolving dot segments; never escapes the root."""
    path = raw
    for _ in range(5):  # %25252e... needs several passes; more than a few is an attack, not a client
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    if "%" in path and unquote(path) != path:
        raise GatewayError("invalid_request", "The request path is encoded too many times.")
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise GatewayError("invalid_request", "The request path contains control characters.")
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return tuple(segments)


def resolve_route(raw_path: str, proxy_route: str) -> Route | None:
    """The proxy route for a path, or None when the path is not a proxy path at all."""
    segments = normalise_path(raw_path)
    lower = tuple(s.lower() for s in segments)
    prefix = normalise_path(proxy_route)
    prefix_lower = tuple(s.lower() for s in prefix)
    n = len(prefix_lower)

    if lower[:n] == prefix_lower and len(lower) > n and lower[n] in (OPENAI, ANTHROPIC):
        provider = lower[n]
        return _route(provider, provider, segments[n + 1 :], by_model=False, provider_route=True)
    if lower[:1] == ("openai",):
        return _route(OPENAI, OPENAI, segments[1:], by_model=False)
    if lower[:1] == ("v1",):
        rest = lower[_leading_v1s(lower) :]
        if rest[:1] == ("messages",):  # the Anthropic SDK with this gateway as its base URL
            return _route(ANTHROPIC, ANTHROPIC, segments, by_model=False)
        return _route(OPENAI, OPENAI, segments, by_model=True)
    return None


def _leading_v1s(lower: tuple[str, ...]) -> int:
    n = 0
    while lower[n : n + 1] == ("v1",):
        n += 1
    return n


def _route(
    provider: str, dialect: str, segments: tuple[str, ...], *, by_model: bool, provider_route: bool = False
) -> Route:
    # A missing /v1 is added upstream and a present one is not doubled; a doubled one (a client that appends
    # /v1/messages to a base URL already ending in /v1, as litellm does) is folded into one.
    segments = segments[_leading_v1s(tuple(s.lower() for s in segments)) :]
    original = "/".join(segments)
    return Route(provider, dialect, original.lower(), original, by_model, provider_route)
