"""What a model reads in a request body: its texts, images, messages and tools.

One walk over a parsed body of any endpoint poolgate relays (chat completions,
completions, embeddings, responses, Anthropic messages), so token counting and
the prompt filter read the same thing. Anything not known is walked for its
strings, so an endpoint this module does not know is still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Keys whose values the model never reads as prompt text (ids, encodings, switches).
_NOT_PROMPT = frozenset({
    "type", "id", "model", "cache_control", "media_type", "detail", "format", "encoding_format", "voice",
    "response_format", "stream_options", "metadata", "signature", "tool_choice", "user", "store",
})
# Top-level fields that carry the prompt, per endpoint's body shape; everything else is settings.
_PROMPT_FIELDS = ("system", "instructions", "messages", "input", "prompt", "suffix")


@dataclass(slots=True)
class Prompt:
    """The parts of a prompt that cost tokens."""

    texts: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (url or base64 data, detail)
    messages: int = 0  # chat messages: each costs a few tokens of framing
    names: int = 0  # messages with a `name`: one more token each on OpenAI
    tools: list[dict[str, Any]] = field(default_factory=list)  # tool definitions as the client sent them

    def text(self) -> str:
        """Every text the model reads, one per line: what the prompt filter matches against."""
        return "\n".join(self.texts)


def read_prompt(payload: dict[str, Any]) -> Prompt:
    prompt = Prompt()
    for name in _PROMPT_FIELDS:
        if name not in payload:
            continue
        value = payload[name]
        if name in ("messages", "input") and isinstance(value, list) and all(isinstance(m, dict) for m in value):
            for message in value:
                _message(message, prompt)
        else:
            _content(value, prompt)
    tools = payload.get("tools")
    if isinstance(tools, list):
        prompt.tools.extend(t for t in tools if isinstance(t, dict))
    functions = payload.get("functions")  # OpenAI's older spelling of tools
    if isinstance(functions, list):
        prompt.tools.extend({"type": "function", "function": f} for f in functions if isinstance(f, dict))
    return prompt


def _message(message: dict[str, Any], prompt: Prompt) -> None:
    prompt.messages += 1
    for key, value in message.items():
        if key == "name" and isinstance(value, str):
            prompt.names += 1
            prompt.texts.append(value)
        elif key == "role" and isinstance(value, str):
            prompt.texts.append(value)
        elif key not in _NOT_PROMPT:
            _content(value, prompt)


def _content(value: Any, prompt: Prompt) -> None:
    """Texts and images of a content value of any shape: a string, parts, blocks, nested results."""
    pending = [value]
    while pending:  # a walk, not recursion: the body was already accepted at any nesting it had
        item = pending.pop()
        if isinstance(item, str):
            prompt.texts.append(item)
        elif isinstance(item, list):
            pending.extend(reversed(item))
        elif isinstance(item, dict):
            image = _image(item)
            if image is not None:
                prompt.images.append(image)
                continue
            pending.extend(reversed([v for k, v in item.items() if k not in _NOT_PROMPT]))


def _image(part: dict[str, Any]) -> tuple[str, str] | None:
    kind = part.get("type")
    if kind == "image_url":  # OpenAI chat: {"image_url": {"url": ..., "detail": ...}} (or a bare string)
        spec = part.get("image_url")
        if isinstance(spec, dict):
            return str(spec.get("url", "")), str(spec.get("detail", "auto"))
        return str(spec or ""), "auto"
    if kind == "input_image":  # OpenAI responses
        return str(part.get("image_url") or ""), str(part.get("detail", "auto"))
    if kind == "image":  # Anthropic: {"source": {"type": "base64", "data": ...} | {"type": "url", "url": ...}}
        source = part.get("source")
        if isinstance(source, dict):
            if source.get("type") == "base64":
                return "data:;base64," + str(source.get("data", "")), "auto"
            return str(source.get("url", "")), "auto"
        return "", "auto"
    return None
