"""GATEKEEPER=user_token: each person their own token, refused in the route's dialect when it may not be used.

Users are written into the store as the users' admin API stores them (tests/accounts_support.py).
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from accounts_support import make_user, user_addresses, user_record
from processes import wait_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
ADMIN = "admin-s3cret-key"


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(
        OPENAI_KEY="sk-real-openai-key-1234", ANTHROPIC_KEY="sk-ant-real-key-5678", GATEKEEPER="user_token",
        ADMIN_KEY=ADMIN,
    )


def oai(gateway, token, **headers):
    return openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=token, max_retries=0,
                         default_headers=headers or None)


def ant(gateway, token):
    return anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0)


def test_a_users_token_is_served_counted_to_them_and_never_forwarded(gateway, upstream):
    user_id, token = make_user(gateway)
    reply = oai(gateway, token).chat.completions.create(**CHAT)
    message = ant(gateway, token).messages.create(**MESSAGE)
    assert reply.choices[0].message.content and message.content[0].text
    assert [r["headers"].get("authorization") or r["headers"].get("x-api-key") for r in upstream.requests] == [
        "Bearer sk-real-openai-key-1234", "sk-ant-real-key-5678"]
    assert token not in repr(upstream.requests)
    assert wait_for(lambda: user_record(gateway, user_id)["prompt_count"] == "2")  # once both have settled
    record = user_record(gateway, user_id)
    assert int(record["last_used_at"]) > 0
    # What upstream reported is what the user is counted: the reservation was corrected to it.
    assert int(record["input:gpt-4o-mini"]) == reply.usage.prompt_tokens
    assert int(record["output:gpt-4o-mini"]) == reply.usage.completion_tokens
    assert int(record["used:gpt-4o-mini"]) == reply.usage.total_tokens
    assert int(record["used:claude-haiku"]) == message.usage.input_tokens + message.usage.output_tokens
    assert user_addresses(gateway, user_id) == ["127.0.0.1"]


@pytest.mark.parametrize("place", ["bearer", "x-api-key", "query"])
def test_the_token_is_read_from_each_place_clients_put_it(gateway, place):
    _, token = make_user(gateway)
    headers = {"bearer": {"authorization": f"Bearer {token}"}, "x-api-key": {"x-api-key": token}}.get(place, {})
    query = f"?key={token}" if place == "query" else ""
    reply = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions" + query, json=CHAT, headers=headers)
    assert reply.status_code == 200, reply.text


def test_an_unknown_or_missing_token_is_401_in_each_dialect(gateway, upstream):
    with pytest.raises(openai.AuthenticationError) as caught:
        oai(gateway, "pg-nobody-has-this").chat.completions.create(**CHAT)
    assert "not valid" in caught.value.body["message"]
    with pytest.raises(anthropic.AuthenticationError) as refused:
        ant(gateway, "pg-nobody-has-this").messages.create(**MESSAGE)
    assert refused.value.body["error"]["type"] == "authentication_error"
    missing = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT)
    assert missing.status_code == 401
    assert "No user token" in missing.json()["error"]["message"]
    assert upstream.requests == []


def test_a_disabled_user_is_403_with_the_admins_reason(gateway, upstream):
    _, token = make_user(gateway, disabled_at=5, disabled_reason="Spamming the shared pool.")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(gateway, token).chat.completions.create(**CHAT)
    assert "Spamming the shared pool." in caught.value.body["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        ant(gateway, token).messages.create(**MESSAGE)
    assert "Spamming the shared pool." in refused.value.body["error"]["message"]
    assert upstream.requests == []


def test_an_expired_temporary_user_is_403_saying_it_expired(gateway, upstream):
    _, token = make_user(gateway, type="temporary", expires_at=1_000)  # 1970: long over
    _, lasting = make_user(gateway, type="temporary", expires_at=32_503_680_000_000)  # the year 3000
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(gateway, token).chat.completions.create(**CHAT)
    assert "expired" in caught.value.body["message"]
    assert oai(gateway, lasting).chat.completions.create(**CHAT).choices
    assert len(upstream.requests) == 1


def test_a_new_address_past_the_users_ip_limit_is_403(gateway, upstream):
    user_id, token = make_user(gateway, max_ips=2)
    for address in ("198.51.100.1", "198.51.100.2", "198.51.100.1"):
        assert oai(gateway, token, **{"x-forwarded-for": address}).chat.completions.create(**CHAT).choices
    with pytest.raises(openai.PermissionDeniedError) as caught:
        oai(gateway, token, **{"x-forwarded-for": "198.51.100.3"}).chat.completions.create(**CHAT)
    assert "No more IP addresses allowed for this token" in caught.value.body["message"]
    assert sorted(user_addresses(gateway, user_id)) == ["198.51.100.1", "198.51.100.2"]
    assert len(upstream.requests) == 3
    # A special user has no address limit.
    _, special = make_user(gateway, max_ips=1, type="special")
    for address in ("198.51.100.1", "198.51.100.2"):
        assert oai(gateway, special, **{"x-forwarded-for": address}).chat.completions.create(**CHAT).choices


def test_the_admin_key_as_a_token_always_passes(gateway, upstream):
    assert oai(gateway, ADMIN).chat.completions.create(**CHAT).choices
    assert ant(gateway, ADMIN).messages.create(**MESSAGE).content
    assert ADMIN not in repr(upstream.requests)


def test_a_refused_request_holds_no_key(start_gateway, upstream):
    """Admission and the lease attempt travel together; a refused request hands its key straight back."""
    gateway = start_gateway(OPENAI_KEY="sk-real-openai-key-1234", GATEKEEPER="user_token", KEY_CONCURRENCY="1",
                            QUEUE_TIMEOUT_SEC="3")
    _, disabled = make_user(gateway, disabled_at=5, disabled_reason="No.")
    assert [oai_status(gateway, token) for token in ("pg-nobody-has-this", disabled) * 3] == [401, 403] * 3
    assert gateway.key_status("sk-real-openai-key-1234")["inflight"] == 0
    _, token = make_user(gateway)
    assert oai_status(gateway, token) == 200  # the one key is free: no refused request kept it
    assert len(upstream.requests) == 1


def oai_status(gateway, token):
    return httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {token}"}).status_code
