"""Per-family token quotas: reserved at admission, corrected at settlement, never overspent by concurrency."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest
from accounts_support import make_user, user_record
from processes import wait_for
from scripted_upstream import STREAM_HEAD, ScriptedUpstream, chunked, json_head

from catalog.tokens import count_prompt_tokens

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
USERS = dict(OPENAI_KEY="sk-real-openai-key-1234", ANTHROPIC_KEY="sk-ant-real-key-5678", GATEKEEPER="user_token")


def reserved_for(body: bytes, max_output: int) -> int:
    """What admission reserves: the prompt as the request policy counts it, plus the request's maximum output."""
    payload = json.loads(body)
    return count_prompt_tokens("openai", payload["model"], payload) + max_output


def test_over_quota_is_429_quota_exceeded_naming_the_family_in_each_dialect(start_gateway, upstream):
    gateway = start_gateway(**USERS)
    user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": 10, "quota:claude-haiku": 10})
    with pytest.raises(openai.RateLimitError) as caught:
        openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=token, max_retries=0).chat.completions.create(
            **CHAT)
    assert caught.value.body["code"] == "quota_exceeded"
    assert "Token quota exceeded for gpt-4o-mini" in caught.value.body["message"]
    assert "refresh" in caught.value.body["message"]
    with pytest.raises(anthropic.RateLimitError) as refused:
        anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0).messages.create(
            **MESSAGE)
    assert "Token quota exceeded for claude-haiku" in refused.value.body["error"]["message"]
    assert upstream.requests == []
    assert user_record(gateway, user_id).get("used:gpt-4o-mini", "0") == "0"  # a refusal reserves nothing


def test_a_quota_is_spent_by_what_upstream_reported_until_it_is_gone(start_gateway, upstream):
    gateway = start_gateway(**USERS)
    body = json.dumps({**CHAT, "max_tokens": 100}).encode()  # a reservation well above what a reply costs
    reserve = reserved_for(body, 100)
    user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": reserve * 3})
    served = []
    for _ in range(20):
        reply = httpx.post(gateway.url + "/v1/chat/completions", content=body,
                           headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
        if reply.status_code != 200:
            break
        served.append(reply.json()["usage"]["total_tokens"])
        # Corrected to upstream's figures, not left at the reservations (settlement follows the reply out).
        assert wait_for(lambda: int(user_record(gateway, user_id)["used:gpt-4o-mini"]) == sum(served))
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "quota_exceeded"
    used = int(user_record(gateway, user_id)["used:gpt-4o-mini"])
    assert used == sum(served)
    assert used + reserve > reserve * 3  # refused only once the next reservation no longer fitted
    assert len(served) > 3  # the corrections left room for more than three reservations' worth


def test_special_users_are_exempt_from_quotas(start_gateway):
    gateway = start_gateway(**USERS)
    user_id, token = make_user(gateway, type="special", **{"quota:gpt-4o-mini": 1})
    for _ in range(3):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                          headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert int(user_record(gateway, user_id)["used:gpt-4o-mini"]) > 1  # still counted, for the usage report


def test_a_failed_request_hands_its_reservation_back(start_gateway, upstream):
    gateway = start_gateway(**{**USERS, "OPENAI_KEY": "sk-fail500-key-1111"})
    user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": 100_000})
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {token}"})
    assert reply.status_code == 502
    assert len(upstream.requests) >= 1
    assert user_record(gateway, user_id)["used:gpt-4o-mini"] == "0"


def test_a_request_upstream_refuses_as_the_clients_mistake_spends_nothing(start_gateway, upstream):
    gateway = start_gateway(**USERS)
    user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": 100_000})
    bad = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                     json={**CHAT, "tools": "not a list"})
    assert bad.status_code == 400
    assert len(upstream.requests) == 1
    assert user_record(gateway, user_id)["used:gpt-4o-mini"] == "0"


def test_fifty_requests_at_once_never_spend_more_than_a_quota_that_fits_ten(start_gateway):
    """Upstream holds every admitted request until all fifty are decided, so no settlement frees room early."""
    release = threading.Event()
    completion = json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }).encode()

    async def answer(exchange):
        await asyncio.to_thread(release.wait, 60)
        await exchange.write(json_head(200, len(completion)) + completion)

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(**{**USERS, "OPENAI_BASE_URL": upstream.url})
        body = json.dumps(CHAT).encode()
        reserve = reserved_for(body, 20)
        user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": reserve * 11 - 1})
        replies: list[httpx.Response] = []

        def send() -> httpx.Response:
            reply = httpx.post(gateway.url + "/v1/chat/completions", content=body, timeout=60,
                               headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
            replies.append(reply)
            return reply

        with ThreadPoolExecutor(50) as workers:
            futures = [workers.submit(send) for _ in range(50)]
            assert wait_for(lambda: len(replies) + len(upstream.exchanges) == 50, timeout=60)
            release.set()
            results = [f.result() for f in futures]
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] * 10 + [429] * 40
        assert {r.json()["error"]["code"] for r in results if r.status_code == 429} == {"quota_exceeded"}
        assert len(upstream.exchanges) == 10
        # Settlement follows each reply out: the reservations become what upstream reported.
        assert wait_for(lambda: user_record(gateway, user_id)["used:gpt-4o-mini"] == str(10 * 8))
    finally:
        release.set()
        upstream.stop()


def test_a_stream_upstream_breaks_off_charges_the_user_what_was_served(start_gateway):
    """No usage report ever came: the reservation becomes poolgate's own count of the prompt and the text relayed."""
    words = [" the"] * 10  # one token each

    async def answer(exchange):
        events = b"".join(chunked(b"data: " + json.dumps({
            "id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": w}}]}).encode() + b"\n\n") for w in words)
        await exchange.write(STREAM_HEAD + events)  # and breaks off: no usage, no end of the body

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(**{**USERS, "OPENAI_BASE_URL": upstream.url})
        user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": 100_000})
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                          headers={"authorization": f"Bearer {token}"}, timeout=30) as reply:
            relayed = b"".join(reply.iter_raw())
        assert relayed.count(b" the") == 10
        assert wait_for(lambda: user_record(gateway, user_id).get("prompt_count") == "1")
        record = user_record(gateway, user_id)
        assert int(record["output:gpt-4o-mini"]) == 10
        assert 0 < int(record["input:gpt-4o-mini"]) < reserved_for(json.dumps(CHAT).encode(), 0)
        assert int(record["used:gpt-4o-mini"]) == int(record["input:gpt-4o-mini"]) + 10
    finally:
        upstream.stop()


def test_image_generations_have_their_own_per_minute_limit(start_gateway, upstream):
    gateway = start_gateway(**USERS, RATE_LIMITER="true", RATE_LIMIT_USER_PER_MINUTE="100", IMAGE_MODEL_RATE_LIMIT="1",
                            RATE_LIMIT_USER_BAN_AFTER="0")
    _, token = make_user(gateway)
    image = {"model": "dall-e-3", "prompt": "a lighthouse", "n": 1}
    auth = {"authorization": f"Bearer {token}"}
    assert httpx.post(gateway.url + "/v1/images/generations", json=image, headers=auth).status_code == 200
    limited = httpx.post(gateway.url + "/v1/images/generations", json=image, headers=auth)
    assert limited.status_code == 429
    assert "1 image generations a minute" in limited.json()["error"]["message"]
    assert limited.headers["x-ratelimit-limit-requests"] == "1"
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth).status_code == 200


def test_a_request_whose_client_leaves_while_queued_hands_its_reservation_back(start_gateway):
    release = threading.Event()
    completion = json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }).encode()

    async def answer(exchange):
        await asyncio.to_thread(release.wait, 60)
        await exchange.write(json_head(200, len(completion)) + completion)

    upstream = ScriptedUpstream(answer).start()
    try:
        gateway = start_gateway(**{**USERS, "OPENAI_BASE_URL": upstream.url, "KEY_CONCURRENCY": "1",
                                   "USER_CONCURRENCY_LIMIT": "5"})
        user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": 100_000})
        auth = {"authorization": f"Bearer {token}"}
        body = json.dumps(CHAT).encode()
        with ThreadPoolExecutor(1) as worker:
            first = worker.submit(httpx.post, gateway.url + "/v1/chat/completions", content=body, timeout=60,
                                  headers={**auth, "content-type": "application/json"})
            upstream.wait_for_request(0)  # the one key is taken
            reserve = reserved_for(body, 20)
            assert user_record(gateway, user_id)["used:gpt-4o-mini"] == str(reserve)
            with pytest.raises(httpx.ReadTimeout):  # queued behind it, and the client gives up
                httpx.post(gateway.url + "/v1/chat/completions", content=body, timeout=1.5,
                           headers={**auth, "content-type": "application/json"})
            assert wait_for(lambda: user_record(gateway, user_id)["used:gpt-4o-mini"] == str(reserve))
            release.set()
            assert first.result().status_code == 200
        assert wait_for(lambda: user_record(gateway, user_id)["used:gpt-4o-mini"] == "8")
        assert len(upstream.exchanges) == 1
    finally:
        release.set()
        upstream.stop()
