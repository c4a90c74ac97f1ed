"""What the money tests share: users with a chosen id and email, a request's worst case and actual cost by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from accounts_support import make_user

from catalog.prices import library_rates
from catalog.tokens import count_prompt_tokens

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
USERS = dict(OPENAI_KEY="sk-real-openai-key-1234", ANTHROPIC_KEY="sk-ant-real-key-5678", GATEKEEPER="user_token")


def month_now() -> str:
    now = datetime.now(UTC)
    return f"{now.year:04d}-{now.month:02d}"


def worst_case_micro(body: dict[str, Any], provider: str = "openai") -> int:
    """What admission reserves: the counted prompt, uncached, plus the maximum output, at the model's price."""
    prompt = count_prompt_tokens(provider, body["model"], body)
    return library_rates(body["model"], provider).cost_micro(prompt, body.get("max_tokens", 0))


def cost_micro(model: str, usage: dict[str, Any], provider: str = "openai") -> int:
    """What a reply's usage costs, read the way a user would price it by hand from the reply's `usage`."""
    rates = library_rates(model, provider)
    if provider == "anthropic":
        read, write = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
        return rates.cost_micro(usage["input_tokens"] + read + write, usage["output_tokens"], read, write)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return rates.cost_micro(usage["prompt_tokens"], usage["completion_tokens"], cached)


def usd(micro: int) -> float:
    return micro / 1_000_000


def user_with_id(gateway: Any, user_id: str, **fields: Any) -> str:
    """A user whose id is chosen (BUDGETS names users by id): returns their token."""
    return make_user(gateway, user_id=user_id, **fields)[1]


def body_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
