"""Stage 4, validate: read what the request asks for, once.

The JSON body is parsed a single time to find the model, the model family and
whether the client wants a stream; it is re-encoded only when it must change
(OpenAI streams are asked to report usage). Bodies that are not JSON
(multipart uploads) are relayed as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from catalog.families import DEFAULT_FAMILY, family_of, is_anthropic_model
from gateway.endpoint_filter import AllowedCall
from gateway.errors import ANTHROPIC, OPENAI, GatewayError

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_MULTIPART_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]*\r\n)*?\r\n([^\r\n]{1,200})\r\n')
_USAGE_STREAMING_ENDPOINTS = frozenset({"chat/completions", "completions"})


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
) -> UpstreamCall:
    model: str | None = None
    stream = drop_usage_chunk = False
    if allowed.json_body and method == "POST":
        payload = _parse_json_object(body)
        raw_model = payload.get("model")
        model = raw_model if isinstance(raw_model, str) else None
        stream = payload.get("stream") is True
        if by_model and model and is_anthropic_model(model):
            raise GatewayError(
                "invalid_request",
                f"The model {model!r} is an Anthropic model: send it in Anthropic format to "
                f"{proxy_route}/anthropic/v1/messages (OpenAI-format calls to Claude are not translated yet).",
            )
        if stream and provider == OPENAI and allowed.endpoint in _USAGE_STREAMING_ENDPOINTS:
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                try:
                    body = _encode(payload)
                except RecursionError:
                    raise _too_deep() from None
                drop_usage_chunk = True
    elif method == "POST" and body:
        found = _MULTIPART_MODEL.search(body[:65536])
        model = found.group(1).decode("utf-8", "replace").strip() if found else None
    elif allowed.endpoint == "models/*":
        model = allowed.upstream_path.rsplit("/", 1)[-1]
    family = family_of(provider, model) if model else DEFAULT_FAMILY[provider]
    if allowed_families and model and family not in allowed_families:
        raise GatewayError(
            "permission",
            f"Models of the {family} family are not served by this proxy "
            f"(served: {', '.join(sorted(allowed_families))}).",
        )
    return UpstreamCall(
        provider=provider,
        method=method,
        path=allowed.upstream_path,
        query=query,
        body=body,
        model=model,
        family=family,
        stream=stream,
        drop_usage_chunk=drop_usage_chunk,
        endpoint=allowed.endpoint,
    )


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
