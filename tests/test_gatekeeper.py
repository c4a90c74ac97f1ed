"""Proxy credentials: required when configured, accepted wherever clients send them, never forwarded."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(
        OPENAI_KEY="sk-real-openai-key-1234:org-pooled",
        ANTHROPIC_KEY="sk-ant-real-key-5678",
        GATEKEEPER="proxy_key",
        PROXY_KEY="s3cret-proxy",
    )


def test_missing_or_wrong_proxy_key_is_401_in_each_dialect(gateway, upstream):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="wrong", max_retries=0).messages.create(
            **MESSAGE
        )
    assert caught.value.body["error"]["type"] == "authentication_error"
    missing = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT)
    assert missing.status_code == 401
    assert "No proxy key" in missing.json()["error"]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"authorization": "Bearer s3cret-proxy"}, ""),
        ({"x-api-key": "s3cret-proxy"}, ""),
        ({}, "?key=s3cret-proxy"),
    ],
)
def test_credential_is_read_from_each_place_and_never_forwarded(gateway, upstream, headers, query):
    reply = httpx.post(
        gateway.url + "/proxy/openai/v1/chat/completions" + query,
        json=CHAT,
        headers={**headers, "cookie": "session=abc", "x-forwarded-for": "198.51.100.9"},
    )
    assert reply.status_code == 200, reply.text
    sent = upstream.requests[-1]
    assert sent["headers"]["authorization"] == "Bearer sk-real-openai-key-1234"
    assert sent["headers"]["openai-organization"] == "org-pooled"
    assert "x-api-key" not in sent["headers"]
    assert "cookie" not in sent["headers"]
    assert "s3cret-proxy" not in repr(sent)


def test_anthropic_sdk_bearer_credential_becomes_the_real_x_api_key(gateway, upstream):
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="s3cret-proxy", max_retries=0)
    client.messages.create(**MESSAGE, extra_headers={"anthropic-beta": "tools-2024-04-04"})
    sent = upstream.requests[-1]
    assert sent["headers"]["x-api-key"] == "sk-ant-real-key-5678"
    assert "authorization" not in sent["headers"]
    assert sent["headers"]["anthropic-beta"] == "tools-2024-04-04"
    assert sent["headers"]["anthropic-version"] == client.default_headers["anthropic-version"]


def test_other_query_parameters_are_kept_when_the_key_is_removed(gateway, upstream):
    reply = httpx.get(gateway.url + "/proxy/anthropic/v1/models?limit=5&key=s3cret-proxy")
    assert reply.status_code == 200
    assert upstream.requests[-1]["query"] == "limit=5"


def test_gatekeeper_none_lets_anyone_in(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-open-pool-key-9999")
    reply = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT)
    assert reply.status_code == 200
    assert upstream.requests[-1]["key"] == "sk-open-pool-key-9999"
