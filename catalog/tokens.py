"""How many tokens a prompt is, counted here before any model sees it.

`count_prompt_tokens(provider, model, payload)` is the one count the gateway
uses (context caps, quota reservations). OpenAI prompts are counted with the
tokenizer the model reads (`catalog.encodings`: o200k_base or cl100k_base),
plus what OpenAI's cookbook (`num_tokens_from_messages`) documents as framing:
3 tokens per message, 1 per `name`, 3 priming the reply. Images cost what
their tile formula says (`catalog.images`).

Tool definitions follow the cookbook's `num_tokens_for_tools` approximation
for function tools: 7 tokens a function (10 on cl100k models) + its
`name:description`, 3 for its properties + 3 and `name:type:description`
each, enums 3 a value less 3, and 12 to close; whatever else a property's
schema holds (nested objects, items) is counted as its JSON text. Other tool
kinds (built-in tools) are counted as their JSON text.

Claude's tokenizer is not published. Its prompts are counted as cl100k_base
text x `CLAUDE_TOKENS_PER_CL100K` (1.2: published comparisons put Claude's
counts 20-30% above OpenAI's for English; unmeasured here against
`usage.input_tokens`, which needs the network), plus Anthropic's documented
tool-use system prompt (346 tokens) when tools are given and its image
estimate (width x height / 750).

Counting is pure CPU: the gateway counts a small body on the event loop and a
large one in a thread (`gateway/policy.py`). Never the network: the
encodings are package data.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from catalog.encodings import CL100K, O200K, encoding, encoding_name_for
from catalog.images import anthropic_image_tokens, image_size, openai_image_tokens
from catalog.prompts import Prompt, read_prompt

log = logging.getLogger("poolgate.tokens")

BYTES_PER_TOKEN = 4  # the fallback when no encoding loads: English prose runs close to this
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
CLAUDE_TOKENS_PER_CL100K = 1.2
CLAUDE_TOOL_SYSTEM_PROMPT = 346  # Anthropic's tool-use pricing table, tool_choice auto/none (Claude 4 models)
# The cookbook's function-tool framing, for o200k models and for cl100k models.
_TOOL_FRAMING = {
    O200K: {"func_init": 7, "prop_init": 3, "prop_key": 3, "enum_init": -3, "enum_item": 3, "func_end": 12},
    CL100K: {"func_init": 10, "prop_init": 3, "prop_key": 3, "enum_init": -3, "enum_item": 3, "func_end": 12},
}


def count_tokens(text: str, encoding_name: str = CL100K) -> int:
    """Tokens of one text in the named encoding (cl100k_base unless told)."""
    if not text:
        return 0
    enc = encoding(encoding_name)
    if enc is None:
        return math.ceil(len(text.encode("utf-8", "replace")) / BYTES_PER_TOKEN)
    # Text that spells a special token is counted as text, never refused: `encode(text, disallowed_special=())`,
    # without its checks of the special-token sets.
    return len(enc.encode_ordinary(text))


def count_prompt_tokens(provider: str, model: str | None, payload: dict[str, Any]) -> int:
    """Tokens of the prompt a request body sends (`provider` is "openai" or "anthropic")."""
    return count_prompt(provider, model, read_prompt(payload))


def count_prompt(provider: str, model: str | None, prompt: Prompt) -> int:
    """`count_prompt_tokens` of a prompt already read (`catalog.prompts.read_prompt`)."""
    if provider == "anthropic":
        return _claude_tokens(prompt)
    return _openai_tokens(prompt, encoding_name_for(model))


def prompt_text(payload: dict[str, Any]) -> str:
    """The prompt's text, flattened: what the prompt filter reads."""
    return read_prompt(payload).text()


def _openai_tokens(prompt: Prompt, name: str) -> int:
    total = sum(count_tokens(text, name) for text in prompt.texts)
    if prompt.messages:
        total += TOKENS_PER_MESSAGE * prompt.messages + TOKENS_PER_NAME * prompt.names + REPLY_PRIMING
    for url, detail in prompt.images:
        total += openai_image_tokens(*image_size(url), detail)
    if prompt.tools:
        total += _openai_tools_tokens(prompt.tools, name)
    return total


def _openai_tools_tokens(tools: list[dict[str, Any]], name: str) -> int:
    framing = _TOOL_FRAMING[name]
    total = 0
    for tool in tools:
        function = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(function, dict):  # a built-in tool, or the responses API's flat function shape
            function = tool if tool.get("type") == "function" and "name" in tool else None
        if function is None:
            total += count_tokens(json.dumps(tool), name)
            continue
        total += framing["func_init"]
        description = str(function.get("description") or "").removesuffix(".")
        total += count_tokens(f"{function.get('name', '')}:{description}", name)
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict) and properties:
            total += framing["prop_init"]
            for key, spec in properties.items():
                total += framing["prop_key"]
                spec = spec if isinstance(spec, dict) else {}
                enum = spec.get("enum")
                if isinstance(enum, list):
                    total += framing["enum_init"]
                    for item in enum:
                        total += framing["enum_item"] + count_tokens(str(item), name)
                p_description = str(spec.get("description") or "").removesuffix(".")
                total += count_tokens(f"{key}:{spec.get('type', '')}:{p_description}", name)
                rest = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
                if rest:  # nested schemas: beyond the cookbook, counted as their JSON text
                    total += count_tokens(json.dumps(rest), name)
    return total + framing["func_end"]


def _claude_tokens(prompt: Prompt) -> int:
    text = sum(count_tokens(t) for t in prompt.texts) + TOKENS_PER_MESSAGE * prompt.messages
    if prompt.tools:
        text += sum(count_tokens(json.dumps(tool)) for tool in prompt.tools)
    total = math.ceil(text * CLAUDE_TOKENS_PER_CL100K)
    if prompt.tools:
        total += CLAUDE_TOOL_SYSTEM_PROMPT
    for url, _ in prompt.images:
        total += anthropic_image_tokens(*image_size(url))
    return total
