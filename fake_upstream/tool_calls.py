"""Whether the mock's "model" calls a tool, which one, with what arguments; and how JSON is streamed.

Both APIs decide the same way, once their request shapes are read:
a tool the request forces (OpenAI `tool_choice: {function: {name}}`,
Anthropic `tool_choice: {type: tool, name}`) is called; `required` / `any`
calls the tool the prompt names, else the first; `auto` (the default) calls a
tool only when the last message names it, so an agent loop that answers with
the tool's result gets text back and ends; `none` never calls one. A prompt
that names several tools gets one call to each, in parallel, unless the
request turned parallel calls off. The arguments are the minimal instance of
the tool's parameter schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .exchange import encode_json
from .schema_instance import instance_of

# How many characters of JSON go in one streamed fragment: a few, as a model's tokens would.
FRAGMENT_CHARS = 6


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as both APIs stream it
    forced: bool  # the request named this tool: OpenAI then finishes with `stop`, not `tool_calls`


def choose_tool_call(tools: list[Tool], mode: str, forced_name: str | None, prompt: str) -> ToolCall | None:
    """The call the "model" makes. `mode` is `none`, `auto`, `any` or `tool` (with `forced_name`)."""
    calls = choose_tool_calls(tools, mode, forced_name, prompt, parallel=False)
    return calls[0] if calls else None


def choose_tool_calls(
    tools: list[Tool], mode: str, forced_name: str | None, prompt: str, *, parallel: bool
) -> list[ToolCall]:
    """The calls the "model" makes: with parallel calls allowed, one for every tool the prompt names."""
    if not tools or mode == "none":
        return []
    by_name = {tool.name: tool for tool in tools}
    if mode == "tool":
        tool = by_name.get(forced_name or "")
        return [] if tool is None else [ToolCall(tool.name, json_of(instance_of(tool.schema)), forced=True)]
    named = [tool for tool in tools if tool.name in prompt]
    if not named and mode == "any":
        named = tools[:1]
    return [ToolCall(tool.name, json_of(instance_of(tool.schema)), forced=False)
            for tool in (named if parallel else named[:1])]


def json_of(value: Any) -> str:
    return encode_json(value).decode()


def fragments(text: str) -> list[str]:
    """JSON text cut in small pieces, as a model streams arguments or structured output."""
    return [text[i : i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)] or [""]


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its parts (tool results excluded)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_prompt(messages: Any, *, tool_result_roles: frozenset[str]) -> str:
    """The last message's text; empty when it hands back a tool's result, so the "model" answers in text."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return ""
    last = messages[-1]
    if last.get("role") in tool_result_roles or last.get("type") == "function_call_output":
        return ""
    content = last.get("content")
    if isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") == "tool_result" for part in content
    ):
        return ""
    return text_of(content)
