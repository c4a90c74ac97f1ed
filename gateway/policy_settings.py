"""What is wrong with the request-policy settings, one line each (called from `Settings._problems`)."""

from __future__ import annotations

import ipaddress
from typing import Any


def policy_problems(settings: Any) -> list[str]:
    from gateway.prompt_filter import PhraseError, parse_phrases

    problems = []
    for name in ("MAX_CONTEXT_TOKENS_OPENAI", "MAX_CONTEXT_TOKENS_ANTHROPIC", "MAX_OUTPUT_TOKENS_OPENAI",
                 "MAX_OUTPUT_TOKENS_ANTHROPIC"):
        if getattr(settings, name.lower()) < 0:
            problems.append(f"{name} must be 0 (no cap) or more")
    if not settings.count_prompt_tokens and (settings.max_context_tokens_openai
                                             or settings.max_context_tokens_anthropic):
        problems.append("MAX_CONTEXT_TOKENS_* need COUNT_PROMPT_TOKENS=true: a context is measured by counting it")
    for name in ("IP_BLACKLIST", "ADMIN_WHITELIST"):
        problems.extend(f"{name}: {problem}" for problem in network_problems(getattr(settings, name.lower())))
    try:
        parse_phrases(settings.reject_phrases)
    except PhraseError as error:
        problems.append(f"REJECT_PHRASES: {error}")
    if settings.block_redirect and not settings.block_redirect.startswith(("http://", "https://")):
        problems.append(f"BLOCK_REDIRECT={settings.block_redirect!r} must start with http:// or https://")
    return problems


def network_problems(entries: tuple[str, ...] | list[str]) -> list[str]:
    problems = []
    for entry in entries:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            problems.append(f"{entry!r} is not an address or a network like 203.0.113.0/24 or 2001:db8::/32")
    return problems
