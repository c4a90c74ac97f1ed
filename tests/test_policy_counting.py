"""The prompt is counted only when something reads the count, and the context check never misses for it.

Without a quota to reserve against, a prompt whose body is far below the context limit is not counted
(gateway/policy.py, `_fits_by_size`): the count can never exceed twice the body's bytes plus 3. What
costs more than its bytes (images, tools, and escapes that could spell an image) is always counted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from catalog.tokens import count_prompt_tokens

OPENAI_KEY = "sk-test-counting-aaaa1111"
ANTHROPIC_KEY = "sk-ant-test-counting-bbbb2222"


@pytest.mark.parametrize("payload", [
    {"model": "gpt-4o", "messages": [{"role": "user", "content": ""}] * 50},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "", "name": "a"}] * 20},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "語言模型、絵文字🙂🎉、مرحبا"}]},
    {"model": "gpt-4", "messages": [{"role": "user", "content": "x\n\t\"\\" * 40}]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 30}]},
    {"model": "gpt-4o", "input": [{"role": "user", "content": "q"}] * 10, "instructions": "b"},
    {"model": "gpt-4o", "prompt": ["a", "b", "c"] * 10, "suffix": ""},
    {"model": "claude-sonnet-4-5", "system": "s", "messages": [{"role": "user", "content": ""}] * 40},
])
def test_no_prompt_counts_more_than_twice_its_bodys_bytes_plus_three(payload: dict[str, Any]) -> None:
    for compact in (True, False):
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":") if compact else None).encode()
        provider = "anthropic" if payload["model"].startswith("claude") else "openai"
        assert count_prompt_tokens(provider, payload["model"], payload) <= 2 * len(body) + 3


def _image_body() -> tuple[str, bytes]:
    payload = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://img.test/a.png", "detail": "high"}}]}]}
    return "/proxy/openai/v1/chat/completions", json.dumps(payload).encode()


def _escaped_image_body() -> tuple[str, bytes]:
    # No "image" in the bytes: only the decoded JSON says what the part is.
    path, body = _image_body()
    return path, body.replace(b'"image_url"', b'"\\u0069mage_url"')


def _tools_body() -> tuple[str, bytes]:
    # Claude's tool use adds a system prompt of its own (346 tokens), whatever the body's size.
    payload = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
               "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    return "/proxy/anthropic/v1/messages", json.dumps(payload).encode()


@pytest.mark.parametrize("make_body", [_image_body, _escaped_image_body, _tools_body],
                         ids=["image", "escaped_image", "claude_tools"])
def test_a_small_body_that_costs_more_than_its_size_is_still_counted_against_the_context_cap(
    start_gateway: Any, upstream: Any, make_body: Any
) -> None:
    path, body = make_body()
    payload = json.loads(body)
    provider = "anthropic" if "anthropic" in path else "openai"
    requested = payload.get("max_tokens", 0)
    needed = count_prompt_tokens(provider, payload["model"], payload) + requested
    cap = needed - 1
    assert 2 * len(body) + 3 + requested <= cap, "the body's size alone would let it through: the count must not"
    gateway = start_gateway(
        OPENAI_KEY=OPENAI_KEY, ANTHROPIC_KEY=ANTHROPIC_KEY,
        MAX_CONTEXT_TOKENS_OPENAI=str(cap), MAX_CONTEXT_TOKENS_ANTHROPIC=str(cap),
    )
    before = len(upstream.requests)

    reply = httpx.post(gateway.url + path, content=body,
                       headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})

    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert f"too long: {needed - requested} prompt tokens" in message
    assert f"over the limit of {cap} tokens" in message
    assert len(upstream.requests) == before, "nothing went upstream"


def test_a_small_prompt_far_below_the_window_is_served_uncounted_and_unchanged(start_gateway: Any, upstream: Any
                                                                            ) -> None:
    gateway = start_gateway(OPENAI_KEY=OPENAI_KEY, MAX_OUTPUT_TOKENS_OPENAI="50")
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 500,
                       "messages": [{"role": "user", "content": "Say hello."}]}).encode()

    reply = httpx.post(gateway.url + "/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"})

    assert reply.status_code == 200, reply.text
    sent = json.loads(upstream.requests[-1]["body"])
    assert sent["max_tokens"] == 50, "the output cap needs no count: it is applied all the same"
    assert sent["messages"] == [{"role": "user", "content": "Say hello."}]
