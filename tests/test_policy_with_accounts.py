"""Where the request policy meets the accounts: `special` users skip the proxy's caps, and quota
reservations count the prompt as the policy counted it, through the official SDK on both stores.

The caps are applied before admission (so a reservation counts the clamped output) and undone, or
said, once admission has told who the user is (`RequestPolicy.after_admission`).
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from users_support import create_user, start_with_admin

from catalog.tokens import count_prompt_tokens

LONG = "The quick brown fox jumps over the lazy dog. " * 200  # ~2,000 tokens: over the context cap below
CAPS = {"MAX_CONTEXT_TOKENS_OPENAI": "1000", "MAX_OUTPUT_TOKENS_OPENAI": "300"}


def _client(gateway: Any, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=token, max_retries=0)


def _sent(upstream: Any) -> dict[str, Any]:
    return json.loads(upstream.requests[-1]["body"])


@pytest.fixture
def capped(start_gateway: Any) -> Any:
    return start_with_admin(start_gateway, GATEKEEPER="user_token", **CAPS)


def test_a_special_user_skips_the_context_and_output_caps(capped: Any, upstream: Any) -> None:
    _, token = create_user(capped, nickname="staff", type="special")

    reply = _client(capped, token).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": LONG}], max_tokens=2000)

    assert reply.choices[0].message.content
    assert _sent(upstream)["max_tokens"] == 2000, "the output cap left the special user's request as it was"


def test_a_normal_user_is_capped_and_refused_over_the_context_cap(capped: Any, upstream: Any) -> None:
    _, token = create_user(capped, nickname="guest")
    client = _client(capped, token)

    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=2000)
    clamped = _sent(upstream)["max_tokens"]
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": LONG}], max_tokens=50)

    assert clamped == 300
    assert refused.value.code == "context_length_exceeded"
    assert len(upstream.requests) == before, "nothing went upstream"


def test_a_quota_reservation_counts_the_prompt_as_counted_not_the_bodys_size(capped: Any, upstream: Any) -> None:
    # A short prompt in a long-winded body: the body's size would reserve several times what the prompt costs.
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "ok"}]
    prompt = count_prompt_tokens("openai", "gpt-4o-mini", {"messages": messages})
    body_estimate = len(json.dumps({"model": "gpt-4o-mini", "messages": messages, "max_tokens": 10})) // 4
    assert body_estimate > prompt + 10  # the two estimates differ, so the quota below tells which one was used
    _, token = create_user(capped, nickname="thrifty", quotas={"gpt-4o-mini": prompt + 10})

    reply = _client(capped, token).chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=10)

    assert reply.choices[0].message.content
