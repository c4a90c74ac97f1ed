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


def build_request_policy(s: Settings, store: Any) -> RequestPolicy:
    return RequestPolicy(
        caps={
            "openai": Caps(s.max_context_tokens_openai, s.max_output_tokens_openai),
            "anthropic": Caps(s.max_context_tokens_anthropic, s.max_output_tokens_anthropic),
        },
        prompt_filter=PromptFilter(s.reject_phrases, s.reject_message, store, s.redis_prefix),
        count_tokens=s.count_prompt_tokens,
    )


async def build_front_door(s: Settings, store: Any) -> FrontDoor:
    defaults = PolicyLists(s.ip_blacklist, s.admin_whitelist, s.blocked_origins)
    blocks = Blocks(store, s.redis_prefix, defaults)
    await blocks.start()
    return FrontDoor(blocks, Cors(s.cors_allowed_origins), block_message=s.block_message,
                     block_redirect=s.block_redirect)
