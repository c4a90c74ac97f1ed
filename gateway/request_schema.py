"""Stage 4, validate (schema): the fields every generation request must get right before anything leaves.

Upstream would refuse these too, but only after a key was leased and a round
trip spent, and some garbage (a `stream` of "yes") changes how poolgate itself
would relay the reply. Each refusal is a 400 in the route's dialect naming the
field, in its message and, on OpenAI routes, in `param` as OpenAI's own errors do.
"""

from __future__ import annotations

from typing import Any

from catalog.families import is_anthropic_model
from gateway.errors import ANTHROPIC, GatewayError

_ROLES = {
    "openai": ("system", "developer", "user", "assistant", "tool", "function"),
    "anthropic": ("user", "assistant"),
}
# Endpoints whose body must name a model: upstream would pick none, and poolgate could not choose a family.
_NEEDS_MODEL = frozenset({"chat/completions", "completions", "embeddings", "responses", "messages",
                          "messages/count_tokens"})
_MESSAGES_ENDPOINTS = frozenset({"chat/completions", "messages", "messages/count_tokens"})
_MOST_CHOICES = 128  # OpenAI's own limit on `n`


def check_request_fields(payload: dict[str, Any], provider: str, endpoint: str, model: str | None) -> None:
    """A GatewayError (400) naming the first field that cannot be sent as it is."""
    if model is None and endpoint in _NEEDS_MODEL:
        raise _bad("model", "is required: name the model to use, like \"gpt-4o-mini\".")
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise _bad("stream", "must be true or false.")
    if "n" in payload:
        _check_choices(payload["n"], provider, model)
    if endpoint in _MESSAGES_ENDPOINTS and "messages" in payload:  # absent: upstream's to refuse, in its words
        _check_messages(payload["messages"], provider)


def _check_choices(n: Any, provider: str, model: str | None) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MOST_CHOICES:
        raise _bad("n", f"must be a whole number from 1 to {_MOST_CHOICES}.")
    if n > 1 and (provider == ANTHROPIC or (model is not None and is_anthropic_model(model))):
        # Claude answers one choice per request; poolgate would have to make n calls and merge them.
        raise _bad("n", "greater than 1 cannot be served for Claude models: Anthropic returns one choice "
                        "per request. Send n separate requests instead.")


def _check_messages(messages: Any, provider: str) -> None:
    if not isinstance(messages, list):  # an empty list is upstream's to refuse: it says why in its own words
        raise _bad("messages", "must be a list of message objects.")
    roles = _ROLES[provider]
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}]", "must be an object with a `role` and `content`.")
        role = message.get("role")
        if role not in roles:
            shown = repr(role) if isinstance(role, str) and len(role) <= 40 else "missing or not a string"
            hint = " (Anthropic takes the system prompt as the top-level `system`)" if role == "system" else ""
            raise _bad(f"messages[{i}].role", f"is {shown}: it must be one of {', '.join(roles)}{hint}.")


def _bad(field: str, what_is_wrong: str) -> GatewayError:
    """The refusal of one field: named first in the message and, for OpenAI clients, in `param`."""
    return GatewayError("invalid_request", f"`{field}` {what_is_wrong}", param=field)
