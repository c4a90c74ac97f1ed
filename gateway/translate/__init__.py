"""Translation: OpenAI-format clients served by Claude, Anthropic-format clients served by GPT.

Chosen once, in validation (`translation_for`): the request is rewritten into
the upstream's format there, so everything after it — admission, the queue, the
lease, pacing, retries, usage and settlement — sees an ordinary call of the
upstream's family. Delivery hands the reply back through the same object: a
whole body translated at once, a stream event by event through a small
per-stream translator, and upstream's errors in the client's dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from catalog.families import DEFAULT_FAMILY, family_of, is_anthropic_model
from gateway.errors import ANTHROPIC, OPENAI
from gateway.translate.chat_reply import ClaudeEventsFromChat, claude_message
from gateway.translate.chat_request import anthropic_request
from gateway.translate.claude_reply import ChatChunksFromClaude, chat_completion
from gateway.translate.error_bodies import anthropic_error_body, openai_error_body
from gateway.translate.messages_request import openai_request

__all__ = ["StreamTranslator", "Translation", "model_alias", "translation_for"]


class StreamTranslator(Protocol):
    def feed(self, event: bytes) -> bytes:
        """One upstream SSE event in, the client's events it becomes out (often none, never buffered)."""
        ...

    def finish(self) -> bytes:
        """After upstream's stream ended: an error event if it ended before its last event."""
        ...


class Translation(Protocol):
    provider: str  # the upstream's
    path: str  # the upstream's endpoint path
    endpoint: str

    def request(self, payload: dict[str, Any], model: str) -> dict[str, Any]: ...

    def reply(self, body: bytes) -> bytes:
        """A whole successful reply, in the client's format."""
        ...

    def error(self, body: bytes) -> bytes:
        """An upstream error body, in the client's dialect."""
        ...

    def stream(self) -> StreamTranslator: ...


class ChatToClaude:
    """`/v1/chat/completions` with a Claude model: Anthropic's Messages API upstream."""

    provider = ANTHROPIC
    path = "/v1/messages"
    endpoint = "messages"

    def __init__(self) -> None:
        self._include_usage = False

    def request(self, payload: dict[str, Any], model: str) -> dict[str, Any]:
        options = payload.get("stream_options")
        self._include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return anthropic_request(payload, model)

    def reply(self, body: bytes) -> bytes:
        return chat_completion(body)

    def error(self, body: bytes) -> bytes:
        return openai_error_body(body)

    def stream(self) -> ChatChunksFromClaude:
        return ChatChunksFromClaude(self._include_usage)


class MessagesToChat:
    """`/v1/messages` with a GPT or o-series model: OpenAI's Chat Completions API upstream."""

    provider = OPENAI
    path = "/v1/chat/completions"
    endpoint = "chat/completions"

    def request(self, payload: dict[str, Any], model: str) -> dict[str, Any]:
        return openai_request(payload, model)

    def reply(self, body: bytes) -> bytes:
        return claude_message(body)

    def error(self, body: bytes) -> bytes:
        return anthropic_error_body(body)

    def stream(self) -> ClaudeEventsFromChat:
        return ClaudeEventsFromChat()


def translation_for(endpoint: str, provider: str, model: str) -> Translation | None:
    """The translation a call needs: a chat completion for Claude, or a message for an OpenAI model; else None."""
    if provider == OPENAI and endpoint == "chat/completions" and is_anthropic_model(model):
        return ChatToClaude()
    if provider == ANTHROPIC and endpoint == "messages" and family_of(OPENAI, model) != DEFAULT_FAMILY[OPENAI]:
        return MessagesToChat()
    return None


def model_alias(aliases: Mapping[str, str], model: str) -> str:
    """`MODEL_ALIASES`: the model a client's model name stands for (itself when it is no alias)."""
    return aliases.get(model, model)
