"""Which model names each fake API knows, so an unknown one gets the real 404.

The real APIs accept exact ids only; the mock accepts every current model
family with the suffixes real ids carry (dates, `-mini`, `-latest`...), so
tests may name any real model, dated or not, while `gpt-nope` or a Claude
model sent to OpenAI is refused as the real API refuses it. The patterns are
the mock's own, not poolgate's catalog: the mock imitates the providers and
must not agree with the gateway by construction.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Suffix words real OpenAI ids append to a base name: dates, sizes, variants.
_OPENAI_SUFFIX = (
    r"(?:-(?:\d{4}-\d{2}-\d{2}|\d{4}|mini|nano|pro|turbo|preview|latest|instruct|16k|32k|hd|audio|search|"
    r"realtime|transcribe|tts|chat|codex|vision|high|low|max|deep-research))*"
)
_OPENAI_BASES = (
    r"gpt-5(?:\.\d)?|gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-4|gpt-3\.5-turbo|o1|o3|o4-mini|codex-mini|"
    r"text-embedding-(?:3-small|3-large|ada-002)|omni-moderation|text-moderation|dall-e-[23]|gpt-image-1|"
    r"whisper-1|tts-1|babbage-002|davinci-002"
)
# A fine-tuned model names its base model: `ft:gpt-4o-mini-2024-07-18:org:suffix:id`.
_OPENAI_MODEL = re.compile(rf"^(?:ft:)?(?:{_OPENAI_BASES}){_OPENAI_SUFFIX}(?::[\w:.-]*)?$")

_ANTHROPIC_MODEL = re.compile(
    r"^claude-(?:"
    r"\d(?:-\d)?-(?:opus|sonnet|haiku)"  # claude-3-5-haiku-20241022, claude-3-7-sonnet-latest
    r"|(?:opus|sonnet|haiku)-\d(?:-\d)?"  # claude-sonnet-4-5-20250929, claude-opus-4-1
    r")(?:-\d{8}|-latest)?$"
)


@lru_cache(maxsize=1024)
def openai_knows(model: str) -> bool:
    """Whether api.openai.com would recognise `model` (any account's access aside)."""
    return _OPENAI_MODEL.match(model) is not None


@lru_cache(maxsize=1024)
def anthropic_knows(model: str) -> bool:
    """Whether api.anthropic.com would recognise `model`."""
    return _ANTHROPIC_MODEL.match(model) is not None
