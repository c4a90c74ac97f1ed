"""Stage 4, validate: read what the request asks for, once.

The JSON body is parsed a single time to find the model, the model family and
whether the client wants a stream; it is re-encoded only when it must change
(OpenAI streams are asked to report usage, or the model families are
restricted). Uploads (multipart forms) are relayed as they are; their `model`
field is read by a real multipart parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from catalog.families import DEFAULT_FAMILY, family_of, is_anthropic_model
from gateway.endpoint_filter import AllowedCall
from gateway.errors import ANTHROPIC, OPENAI, GatewayError
from gateway.multipart_form import form_models
from gateway.request_schema import check_request_fields

if TYPE_CHECKING:
    import asyncio

    from accounts.reservation import Reservation
    from accounts.usage_record import Bill
from gateway.translate import Translation, model_alias, translation_for

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_USAGE_STREAMING_ENDPOINTS = frozenset({"chat/completions", "completions"})
_UPLOAD_ENDPOINTS = frozenset({"audio/transcriptions", "audio/translations", "images/edits", "images/variations"})
_LONGEST_MODEL = 256


@dataclass(slots=True)
class UpstreamCall:
    """One request as it will be sent upstream (minus the key), and what it is for."""

    provider: str
    method: str
    path: str  # "/v1/chat/completions"
    query: str  # forwarded query string, without the client's credential
    body: bytes
    model: str | None
    family: str
    stream: bool
    drop_usage_chunk: bool  # poolgate asked for stream usage; the client did not, so it must not see it
    endpoint: str
    identity: str = ""  # who it is for (set once authenticated): fairness, limits, "people active now"
    # For a models list while ALLOWED_MODEL_FAMILIES is set: the families the reply may show (see listed_models_only).
    listed_families: frozenset[str] = frozenset()
    max_output: int | None = None  # the body's max_tokens / max_completion_tokens / max_output_tokens, if any
    reservation: Reservation | None = None  # the user's quota reservation (set once admitted), settled with the lease
    # The fast path's lease try, sent in admission's round trip: the store's answer, for `Dispatcher.read_lease`.
    first_lease: asyncio.Future[Any] | None = None
    # The JSON body as parsed once (None for uploads and bodiless calls): what the request policy reads.
    payload: dict[str, Any] | None = None
    prompt_tokens: int = 0  # counted by the request policy (gateway/policy.py), for caps and reservations
    bill: Bill | None = None  # how it is priced (set in admission), its cost and month once settled
    # The proxy's caps wait for admission, which knows whether the user is exempt (`special`, or the admin key):
    uncapped_body: bytes | None = None  # the body as sent, before the output caps clamped it
    caps_refusal: GatewayError | None = None  # over the context cap: said once admission has not exempted the user
    exempt_from_caps: bool = False  # set by admission
    # A call of the other provider's format: rewritten for upstream here, its reply rewritten back in delivery.
    translation: Translation | None = None


def validate_request(
    allowed: AllowedCall,
    provider: str,
    method: str,
    query: str,
    body: bytes,
    *,
    by_model: bool,
    proxy_route: str,
    allowed_families: frozenset[str] = frozenset(),
    content_type: bytes = b"",
    aliases: Mapping[str, str] | None = None,
    translate: bool = False,
) -> UpstreamCall:
    """The call to make upstream, or a GatewayError: 400 for a body or model that cannot be served here,
    403 for a model of a family this proxy does not serve.

    While families are restricted, a JSON body is re-encoded from what was checked, so upstream
    cannot read a model poolgate did not (a duplicated `"model"` key, for one).

    `aliases` (MODEL_ALIASES) rename the body's model first; where `translate` is allowed, a chat
    completion for Claude or a message for an OpenAI model is rewritten for the other provider
    (`gateway.translate`), and everything from here on sees a call of the upstream's family.
    """
    model: str | None = None
    max_output: int | None = None
    payload: dict[str, Any] | None = None
    stream = drop_usage_chunk = False
    translation: Translation | None = None
    path = allowed.upstream_path
    endpoint = allowed.endpoint
    if allowed.json_body and method == "POST":
        payload = _parse_json_object(body)
        model = _model_field(payload)
        max_output = max_output_of(payload)
        check_request_fields(payload, provider, allowed.endpoint, model)
        stream = payload.get("stream") is True
        changed = bool(allowed_families)
        if model is not None:  # the translation hook: aliases, then the other provider's format if need be
            if aliases and model_alias(aliases, model) != model:
                model = payload["model"] = model_alias(aliases, model)
                changed = True
            translation = translation_for(endpoint, provider, model) if translate else None
            if translation is not None:
                payload = translation.request(payload, model)
                provider, path, endpoint, query = translation.provider, translation.path, translation.endpoint, ""
                changed = True
        if stream and provider == OPENAI and endpoint in _USAGE_STREAMING_ENDPOINTS:
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                changed = drop_usage_chunk = True
        if changed:
            try:
                body = _encode(payload)
            except RecursionError:
                raise _too_deep() from None
    elif method == "POST" and allowed.endpoint in _UPLOAD_ENDPOINTS:
        models = form_models(body, content_type)
        if len(models) > 1:
            raise GatewayError("invalid_request", "The form names `model` more than once; name it once.")
        model = _model_text(models[0]) if models else None
    elif allowed.endpoint == "models/*":
        model = allowed.upstream_path.rsplit("/", 1)[-1]
    if model is not None:
        _check_provider(model, provider, by_model=by_model, proxy_route=proxy_route)
    family = family_of(provider, model) if model else DEFAULT_FAMILY[provider]
    if allowed_families:
        _check_family(model, family, allowed, method, allowed_families)
    return UpstreamCall(
        provider=provider,
        method=method,
        path=path,
        query=query,
        body=body,
        model=model,
        family=family,
        stream=stream,
        drop_usage_chunk=drop_usage_chunk,
        endpoint=endpoint,
        listed_families=allowed_families if allowed.endpoint == "models" else frozenset(),
        max_output=max_output,
        payload=payload,
        translation=translation,
    )


def max_output_of(payload: dict[str, Any]) -> int | None:
    """The most output tokens the body allows, under whichever name its API uses (for quota reservations)."""
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = payload.get(name)
        if type(value) is int and value >= 0:
            return value
    return None


def _model_field(payload: dict[str, Any]) -> str | None:
    """The body's `model`: None when absent, else a model name or a 400."""
    if "model" not in payload:
        return None
    raw = payload["model"]
    if not isinstance(raw, str):
        raise GatewayError("invalid_request", "`model` must be a string naming a model, like \"gpt-4o-mini\".")
    return _model_text(raw)


def _model_text(raw: str) -> str:
    model = raw.strip()
    if not model:
        raise GatewayError("invalid_request", "`model` is empty: name the model to use.")
    if len(model) > _LONGEST_MODEL:
        raise GatewayError("invalid_request", "`model` is too long to be a model name.")
    return model


def _check_provider(model: str, provider: str, *, by_model: bool, proxy_route: str) -> None:
    """A model of the other provider that was not translated: a provider route without
    TRANSLATE_ON_PROVIDER_ROUTES, or an endpoint other than chat completions and messages."""
    if provider == OPENAI and is_anthropic_model(model):
        raise GatewayError(
            "invalid_request",
            f"The model {model!r} is an Anthropic model: send it in Anthropic format to "
            f"{proxy_route}/anthropic/v1/messages, or as an OpenAI-format chat completion to "
            "/v1/chat/completions, where it is translated.",
        )
    if provider == ANTHROPIC and family_of(OPENAI, model) != DEFAULT_FAMILY[OPENAI]:
        raise GatewayError(
            "invalid_request",
            f"The model {model!r} is an OpenAI model: send it in OpenAI format to /v1/chat/completions "
            f"or {proxy_route}/openai/v1/chat/completions, or as an Anthropic-format message to /v1/messages, "
            "where it is translated.",
        )


def _check_family(
    model: str | None, family: str, allowed: AllowedCall, method: str, allowed_families: frozenset[str]
) -> None:
    """ALLOWED_MODEL_FAMILIES: a call that would use a model must name one of a served family."""
    served = ", ".join(sorted(allowed_families))
    if model is None:
        if method == "POST" and not allowed.endpoint.startswith("extra:"):
            # upstream would pick a default model, of a family nobody checked
            raise GatewayError("invalid_request", f"Name the `model`: this proxy serves only these families: {served}.")
        return
    if family not in allowed_families:
        raise GatewayError(
            "permission", f"Models of the {family} family are not served by this proxy (served: {served})."
        )


def listed_models_only(body: bytes, provider: str, families: frozenset[str]) -> bytes:
    """A models list (either provider's shape) with the models of other families left out."""
    try:
        listing = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body  # not a list poolgate understands; an error body has no models in it
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return body
    kept = [
        m for m in listing["data"]
        if isinstance(m, dict) and isinstance(m.get("id"), str) and family_of(provider, m["id"]) in families
    ]
    listing["data"] = kept
    if "first_id" in listing:  # Anthropic's pagination cursors follow what is shown
        listing["first_id"] = kept[0]["id"] if kept else None
        listing["last_id"] = kept[-1]["id"] if kept else None
    return _encode(listing)


def _parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise GatewayError("invalid_request", "The request body is empty; a JSON object was expected.")
    try:
        payload = _decode(body)
    except msgspec.DecodeError as exc:
        raise GatewayError("invalid_request", f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:  # msgspec's answer to nesting deeper than the interpreter's recursion limit
        raise _too_deep() from None
    if not isinstance(payload, dict):
        raise GatewayError("invalid_request", "The request body must be a JSON object.")
    return payload


def _too_deep() -> GatewayError:
    return GatewayError("invalid_request", "The request body is not valid JSON here: it is nested too deeply.")


def dialect_provider(dialect: str) -> str:
    return ANTHROPIC if dialect == ANTHROPIC else OPENAI
