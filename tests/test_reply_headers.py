"""What a successful upstream reply's headers do: the allow-listed ones reach the client, the rate-limit ones
pace the key (gateway/relay.py reads both in one pass)."""

from __future__ import annotations

import time
from typing import Any

import httpx

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_a_key_whose_reply_said_its_requests_are_spent_is_not_offered_upstream_again(
    start_gateway: Any, upstream: Any
) -> None:
    key = f"sk-test-rpm2-{time.time_ns()}"  # the fake upstream allows it 2 requests a minute, and says so
    gateway = start_gateway(OPENAI_KEY=key, QUEUE_TIMEOUT_SEC="1")

    served = [httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=30) for _ in range(2)]
    third = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=30)

    assert [reply.status_code for reply in served] == [200, 200]
    assert all(reply.headers["x-request-id"] for reply in served), "an allow-listed header reaches the client"
    assert "x-ratelimit-remaining-requests" not in served[0].headers, "a pool key's budget is not the client's"
    assert third.status_code == 504, third.text  # waited for the key's reset, longer than QUEUE_TIMEOUT_SEC
    sent = [r for r in upstream.requests if r["key"] == key]
    assert [r["status"] for r in sent] == [200, 200], "the spent key was held back, never sent into a 429"
