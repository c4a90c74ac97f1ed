"""What passes between the mock's HTTP server and its provider modules.

The server turns bytes into a `MockRequest`; a provider module turns that into a
`Reply` (one body) or a `StreamReply` (server-sent events). Keeping these plain
means a provider module reads as a list of API behaviours with no HTTP
plumbing in sight, and the server knows nothing about either API.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

Headers = list[tuple[str, str]]

encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode

# A random prefix per process plus a counter: ids look like the real ones and
# stay unique across mock instances without costing a random draw per request.
_ID_PREFIX = os.urandom(6).hex()
_id_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """An id shaped like the providers' (`req_…`, `chatcmpl-…`, `msg_…`)."""
    return f"{prefix}{_ID_PREFIX}{next(_id_counter):020x}"


@dataclass(slots=True)
class MockRequest:
    """One parsed HTTP request, as the provider modules see it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    key: str | None  # the credential it carried, if any


@dataclass(slots=True)
class Reply:
    """A complete response sent with Content-Length."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    content_type: str = "application/json"


@dataclass(slots=True)
class StreamReply:
    """A server-sent-event response sent with chunked transfer encoding.

    The events are split in three so the server can pace only the ones that
    carry generated tokens (`tokens_per_sec`), as a real model does; the
    framing events around them go out at once.
    """

    opening: list[bytes]
    tokens: list[bytes]
    closing: list[bytes]
    status: int = 200
    headers: Headers = field(default_factory=list)


AnyReply = Reply | StreamReply
# An endpoint: the request and the default completion length, to its reply.
Handler = Callable[[MockRequest, int], AnyReply]


def find_handler(
    request: MockRequest, routes: dict[tuple[str, str], Handler], retrieve_model: Handler
) -> Handler | None:
    """The endpoint for a request; None for a path outside /v1, which both APIs answer with 404.

    Any /v1 path without an endpoint gets the placeholder, so that what a
    gateway forwards shows in the recording instead of being refused here.
    """
    handler = routes.get((request.method, request.path))
    if handler is not None:
        return handler
    if request.method == "GET" and request.path.startswith("/v1/models/"):
        return retrieve_model
    if request.path.startswith("/v1/"):
        return placeholder
    return None


def placeholder(request: MockRequest, output_tokens: int) -> Reply:
    return json_reply(200, {"object": "mock", "path": request.path})


def json_reply(status: int, payload: Any) -> Reply:
    return Reply(status, encode_json(payload))


def sse_data(payload: Any) -> bytes:
    """An unnamed event, as OpenAI's chat and completions streams frame them."""
    return b"data: " + encode_json(payload) + b"\n\n"


def sse_event(name: str, payload: Any) -> bytes:
    """A named event, as Anthropic's and OpenAI's Responses streams frame them."""
    return b"event: " + name.encode() + b"\ndata: " + encode_json(payload) + b"\n\n"


class NotJsonObject(ValueError):
    """The request body is not a JSON object."""


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        value = _decode_json(body)
    except msgspec.DecodeError as error:
        raise NotJsonObject(str(error)) from None
    if not isinstance(value, dict):
        raise NotJsonObject("body is not a JSON object")
    return value
