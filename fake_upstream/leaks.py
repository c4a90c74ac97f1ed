"""An upstream that hands its caller's key back: what a gateway must never pass on.

A key naming `echokey` gets its own key back in every channel a reply has:
response headers (the request-id headers a gateway forwards among them), the
JSON body of every reply, success or error, in the forms an encoder or a
careless server writes it (plain, JSON `\\u`-escaped whole or in part,
`\\/`-escaped, URL-encoded, base64 alone and as HTTP Basic credentials), and,
in a stream, an error event in the middle of it. A key naming `redirect` is
answered with a 302 whose `Location` and body carry the key, as a server
sending clients to a login page might. Some OpenAI-compatible servers behind
`OPENAI_BASE_URL` behave like this; these keys let a test prove none of it
reaches a client.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from .exchange import AnyReply, Reply, encode_json, parse_json_object, sse_data, sse_event

_REQUEST_ID_HEADERS = frozenset({"x-request-id", "request-id"})


def echoed_forms(key: str) -> dict[str, str]:
    """The key as the echo writes it; each value is what lands between the quotes of a JSON string."""
    return {
        "plain": key,
        "unicode_escaped": "".join(f"\\u{ord(c):04x}" for c in key),
        "partly_escaped": key.replace("-", "\\u002d").replace("_", "\\u005F"),
        "slash_escaped": key.replace("/", "\\/"),  # as PHP's json_encode writes a key holding a `/`
        "url_encoded": quote(key, safe=""),
        "url_encoded_every_byte": "".join(f"%{byte:02X}" for byte in key.encode()),
        "base64": base64.b64encode(key.encode()).decode(),
        "basic_credentials": base64.b64encode(f"user:{key}".encode()).decode(),
    }


def redirect_reply(key: str) -> Reply:
    """A 302 to a "login page", with the key in the Location and in the body."""
    location = f"https://login.example.com/continue?api_key={quote(key, safe='')}"
    body = encode_json({"error": {"message": f"Moved: sign in again with {key}", "location": location}})
    return Reply(302, body, [("location", location), ("x-request-id", f"req_{key}")])


def leak_key(reply: AnyReply, key: str, *, anthropic: bool) -> AnyReply:
    """The same reply, with the key added to its headers and its body or events."""
    reply.headers[:] = [
        (name, f"req_{key}") if name in _REQUEST_ID_HEADERS else (name, value) for name, value in reply.headers
    ]
    reply.headers.extend(
        [
            ("x-echo-key", key),
            ("set-cookie", f"session={key}; Path=/"),
            ("www-authenticate", f'Bearer realm="api", error_description="{key}"'),
            ("openai-organization", key),
        ]
    )
    if isinstance(reply, Reply):
        reply.body = _with_key(reply.body, key)
        return reply
    middle = len(reply.tokens) // 2
    reply.tokens.insert(middle, _error_event(key, anthropic))
    return reply


def _with_key(body: bytes, key: str) -> bytes:
    """A JSON object body with every form of the key added, and the key in its error message if any."""
    try:
        payload = parse_json_object(body)
    except ValueError:
        return body + key.encode()
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error["message"] += f" (API key: {key})"
    forms = echoed_forms(key)
    # Encoded with placeholders, then the escaped forms put in as they are: an encoder would re-escape them.
    payload["echo"] = {name: f"@@{name}@@" for name in forms}
    text = encode_json(payload)
    for name, form in forms.items():
        text = text.replace(f"@@{name}@@".encode(), form.encode())
    return text


def _error_event(key: str, anthropic: bool) -> bytes:
    forms = echoed_forms(key)
    message = f"Upstream hiccup for API key {key}"
    if anthropic:
        event = sse_event("error", {"type": "error", "error": {"type": "api_error", "message": message,
                                                              "echo": "@@"}})
    else:
        event = sse_data({"error": {"message": message, "type": "server_error", "code": None, "echo": "@@"}})
    return event.replace(b'"@@"', b'"' + forms["unicode_escaped"].encode() + b'"')

