"""Stage 2, filter: only generation endpoints are forwarded.

An allow-list, not a block-list: anything not named here is refused before it
can reach upstream with a real key. Known management endpoints (billing,
organization, keys, files, fine-tuning, batches, assistants...) get 403; paths
that are no API at all get 404. Operators may widen the list by configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.routing import Route

GET, POST = frozenset({"GET", "HEAD"}), frozenset({"POST"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    methods: frozenset[str]
    path: str  # "chat/completions", or "models/*" where * is one path segment
    json_body: bool = True  # bodies of JSON endpoints are parsed; others (multipart) are relayed as they are


_ALLOWED: dict[str, tuple[Endpoint, ...]] = {
    "openai": (
        Endpoint(POST, "chat/completions"),
        Endpoint(POST, "completions"),
        Endpoint(POST, "embeddings"),
        Endpoint(POST, "responses"),
        Endpoint(POST, "responses/input_tokens"),
        Endpoint(POST, "moderations"),
        Endpoint(POST, "audio/speech"),
        Endpoint(POST, "audio/transcriptions", json_body=False),
        Endpoint(POST, "audio/translations", json_body=False),
        Endpoint(POST, "images/generations"),
        Endpoint(POST, "images/edits", json_body=False),
        Endpoint(POST, "images/variations", json_body=False),
        Endpoint(GET, "models", json_body=False),
        Endpoint(GET, "models/*", json_body=False),
    ),
    "anthropic": (
        Endpoint(POST, "messages"),
        Endpoint(POST, "messages/count_tokens"),
        Endpoint(GET, "models", json_body=False),
        Endpoint(GET, "models/*", json_body=False),
    ),
}

# First segments of real management APIs: refused with 403 so the client learns it is policy, not a typo.
_REFUSED_ROOTS = frozenset(
    {
        "admin_api_keys", "api_keys", "assistants", "audit_logs", "batches", "billing", "certificates",
        "chatkit", "containers", "conversations", "dashboard", "evals", "files", "fine-tunes", "fine_tuning",
        "invites", "organization", "organizations", "projects", "realtime", "skills", "threads", "uploads",
        "usage", "users", "vector_stores", "responses", "models", "messages", "embeddings", "chat",
        "completions", "audio", "images", "moderations",
    }
)


@dataclass(frozen=True, slots=True)
class AllowedCall:
    """A route the filter let through: the upstream path to use and how to treat its body."""

    upstream_path: str  # "/v1/chat/completions"
    endpoint: str  # the allow-list entry it matched, e.g. "models/*", or "extra:fine_tuning"
    json_body: bool


class EndpointFilter:
    def __init__(self, extra_allowed: tuple[str, ...] = ()) -> None:
        self._extra: dict[str, tuple[str, ...]] = {"openai": (), "anthropic": ()}
        for entry in extra_allowed:
            provider, _, prefix = entry.partition(":")
            self._extra[provider] += (prefix.strip("/").lower(),)
        # The answers given, per route (remembered by the app per raw path) and method: a request repeats one.
        self._allowed: dict[tuple[Route, str, str], AllowedCall] = {}

    def check(self, route: Route, provider: str, method: str) -> AllowedCall:
        """The allowed call for this route, or a GatewayError (403 refused, 404 unknown)."""
        allowed = self._allowed.get((route, provider, method))
        if allowed is None:
            allowed = self._decide(route, provider, method)
            if len(self._allowed) >= 1024:  # model ids in paths make routes many; keep the memo small
                self._allowed.clear()
            self._allowed[route, provider, method] = allowed
        return allowed

    def _decide(self, route: Route, provider: str, method: str) -> AllowedCall:
        segments = route.path.split("/") if route.path else []
        original = route.original_path.split("/") if route.original_path else []
        for endpoint in _ALLOWED[provider]:
            pattern = endpoint.path.split("/")
            if len(pattern) != len(segments):
                continue
            if all(p == "*" or p == s for p, s in zip(pattern, segments, strict=True)):
                if method not in endpoint.methods:
                    raise _refused(method, route.path)
                # Fixed parts are sent lower-case; a `*` (a model id) keeps the client's case.
                parts = [o if p == "*" else p for p, o in zip(pattern, original, strict=True)]
                return AllowedCall("/v1/" + "/".join(parts), endpoint.path, endpoint.json_body)
        for prefix in self._extra[provider]:
            if route.path == prefix or route.path.startswith(prefix + "/"):
                return AllowedCall("/v1/" + route.original_path, "extra:" + prefix, json_body=False)
        if segments and segments[0] in _REFUSED_ROOTS:
            raise _refused(method, route.path)
        raise GatewayError("not_found", f"Unknown endpoint: {method} /v1/{route.path}. {_FORWARDED[provider]}")


def _forwarded(provider: str) -> str:
    """The allow-list as a sentence: what a client that mistyped a path is told it can call."""
    calls = {
        verb: ", ".join("/v1/" + e.path.replace("*", "{id}") for e in _ALLOWED[provider] if verb in e.methods)
        for verb in ("POST", "GET")
    }
    return f"Forwarded here: POST {calls['POST']}; GET {calls['GET']}."


_FORWARDED = {provider: _forwarded(provider) for provider in _ALLOWED}


def _refused(method: str, path: str) -> GatewayError:
    return GatewayError(
        "permission",
        f"{method} /v1/{path} is not available through this proxy: only generation endpoints are forwarded.",
    )
