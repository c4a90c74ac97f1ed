"""A stream that fails after it began: the 200 and the first events went out, then the API's error event.

Both APIs do this on a bad day. Anthropic sends `event: error` with an
`overloaded_error` (its SDKs raise on it); OpenAI sends a `data:` chunk holding
only an `error` object. Neither sends anything after it: no `message_stop`, no
`[DONE]`.
"""

from __future__ import annotations

from .exchange import StreamReply, sse_data, sse_event

TOKENS_BEFORE_FAILING = 2

_ANTHROPIC_ERROR = sse_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
_OPENAI_ERROR = sse_data({"error": {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error", "param": None, "code": None,
}})


def fail_mid_stream(reply: StreamReply, *, anthropic: bool) -> StreamReply:
    """The same stream, cut after a few token events and ended by the error event."""
    return StreamReply(
        opening=reply.opening,
        tokens=reply.tokens[:TOKENS_BEFORE_FAILING],
        closing=[_ANTHROPIC_ERROR if anthropic else _OPENAI_ERROR],
        status=reply.status,
        headers=reply.headers,
    )
