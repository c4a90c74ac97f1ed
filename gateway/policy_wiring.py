"""The request policy's parts, built from the settings at start-up (called by gateway/app.py)."""

from __future__ import annotations

from typing import Any

from gateway.blocks import Blocks, PolicyLists
from gateway.caps import Caps
from gateway.cors import Cors
from gateway.front_door import FrontDoor
from gateway.policy import RequestPolicy
from gateway.prompt_filter import PromptFilter
from gateway.settings import Settings


async def build_prompt_filter(s: Settings, store: Any) -> PromptFilter:
    """REJECT_PHRASES at first start, then what an admin stored; kept in step in the background."""
    prompt_filter = PromptFilter(s.reject_phrases, s.reject_message, store, s.redis_prefix)
    await prompt_filter.start()
    return prompt_filter


def build_request_policy(s: Settings, prompt_filter: PromptFilter) -> RequestPolicy:
    return RequestPolicy(
        caps={
            "openai": Caps(s.max_context_tokens_openai, s.max_output_tokens_openai),
            "anthropic": Caps(s.max_context_tokens_anthropic, s.max_output_tokens_anthropic),
        },
        prompt_filter=prompt_filter,
        count_tokens=s.count_prompt_tokens,
    )


async def build_front_door(s: Settings, store: Any) -> FrontDoor:
    defaults = PolicyLists(s.ip_blacklist, s.admin_whitelist, s.blocked_origins)
    blocks = Blocks(store, s.redis_prefix, defaults)
    await blocks.start()
    return FrontDoor(blocks, Cors(s.cors_allowed_origins), block_message=s.block_message,
                     block_redirect=s.block_redirect)
