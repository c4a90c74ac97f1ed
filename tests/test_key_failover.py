"""Upstream trouble with one key is handled on another key; the client sees it only when all fail."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def chat(gateway, **extra):
    return httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json={**CHAT, **extra}, timeout=30)


def keys_tried(upstream):
    return [r["key"] for r in upstream.requests if r["path"] == "/v1/chat/completions"]


def test_a_rate_limited_key_is_rested_and_the_request_served_by_another(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-ratelimited-key-0001,sk-healthy-key-0002")
    for _ in range(4):
        assert chat(gateway).status_code == 200
    tried = keys_tried(upstream)
    assert tried.count("sk-ratelimited-key-0001") == 1, "a resting key is not tried again while it rests"
    assert tried.count("sk-healthy-key-0002") == 4
    assert gateway.key_status("0001")["status"] == "cooling_down"


def test_a_revoked_key_stops_being_chosen(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-revoked-key-0001,sk-healthy-key-0002")
    for _ in range(5):
        assert chat(gateway).status_code == 200
    assert keys_tried(upstream).count("sk-revoked-key-0001") == 1
    key = gateway.key_status("0001")
    assert key["status"] == "revoked" and key["inflight"] == 0


def test_an_out_of_quota_key_is_marked_over_quota(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-noquota-key-0001,sk-healthy-key-0002")
    for _ in range(3):
        assert chat(gateway).status_code == 200
    assert keys_tried(upstream).count("sk-noquota-key-0001") == 1
    assert gateway.key_status("0001")["status"] == "over_quota"


def test_anthropic_low_credit_balance_retires_the_key_not_the_request(start_gateway, upstream):
    gateway = start_gateway(ANTHROPIC_KEY="sk-ant-noquota-0001,sk-ant-healthy-0002")
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)
    for _ in range(3):
        assert client.messages.create(**MESSAGE).content
    assert gateway.key_status("0001")["status"] == "over_quota"


def test_when_every_key_is_revoked_the_client_gets_503(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-revoked-key-0001,sk-revoked-key-0002")
    reply = chat(gateway)
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "no_key_available"
    assert "sk-revoked" not in reply.text


def test_a_key_that_keeps_answering_429_is_waited_for_then_given_up_on_with_502(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-ratelimited-key-0001", MAX_KEY_ATTEMPTS="2")
    with pytest.raises(openai.InternalServerError) as caught:
        openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key="x", max_retries=0).chat.completions.create(
            **CHAT
        )
    assert caught.value.status_code == 502
    assert "2 times" in caught.value.message
    tried = keys_tried(upstream)
    assert len(tried) == 2, "the request waited out the key's cooldown once, then tried it again"
    gap = upstream.requests[1]["started_at"] - upstream.requests[0]["started_at"]
    assert gap >= 0.9, "the second try came only after the retry-after upstream gave"


def test_server_errors_are_retried_then_reported_as_502(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-fail500-key-0001", UPSTREAM_RETRIES="2")
    reply = chat(gateway)
    assert reply.status_code == 502
    assert len(keys_tried(upstream)) == 3
    assert "sk-fail500" not in reply.text
    assert gateway.key_status("0001")["status"] == "active", "a server error says nothing about the key"


def test_a_server_error_on_one_key_is_served_by_another(start_gateway, upstream):
    gateway = start_gateway(ANTHROPIC_KEY="sk-ant-overloaded-0001,sk-ant-healthy-0002", UPSTREAM_RETRIES="2")
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)
    for _ in range(2):
        assert client.messages.create(**MESSAGE).content


def test_client_errors_pass_through_unchanged_and_keep_the_key_healthy(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-healthy-key-0001")
    reply = httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json={"model": "gpt-4o"}, timeout=30)
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "messages"
    assert gateway.key_status("0001")["status"] == "active"


def test_invalid_json_is_a_400_in_the_clients_dialect(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-healthy-key-0001", ANTHROPIC_KEY="sk-ant-healthy-0002")
    openai_reply = httpx.post(
        gateway.url + "/proxy/openai/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert openai_reply.status_code == 400 and "not valid JSON" in openai_reply.json()["error"]["message"]
    anthropic_reply = httpx.post(gateway.url + "/proxy/anthropic/v1/messages", content=b"[1, 2]")
    assert anthropic_reply.status_code == 400
    assert anthropic_reply.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_a_body_over_the_limit_is_413(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-healthy-key-0001", MAX_REQUEST_BYTES="1000")
    reply = chat(gateway, padding="x" * 2000)
    assert reply.status_code == 413
    assert upstream.requests == []


def test_no_keys_configured_is_503(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-healthy-key-0001")
    reply = httpx.post(gateway.url + "/proxy/anthropic/v1/messages", json=MESSAGE)
    assert reply.status_code == 503
    assert reply.json()["error"]["type"] == "overloaded_error"


def test_no_secret_reaches_a_log_line_or_a_response_during_failover(start_gateway, upstream, caplog):
    secrets = ["sk-revoked-logscan-0001", "sk-ratelimited-logscan-0002", "sk-noquota-logscan-0003",
               "sk-healthy-logscan-0004"]
    caplog.set_level("DEBUG")
    gateway = start_gateway(OPENAI_KEY=",".join(secrets), GATEKEEPER="proxy_key", PROXY_KEY="pw-logscan")
    replies = [httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"x-api-key": "pw-logscan"})
               for _ in range(6)]
    replies.append(httpx.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-4o"},
                              headers={"x-api-key": "pw-logscan"}))
    assert [r.status_code for r in replies] == [200] * 6 + [400]
    everything = caplog.text + "".join(r.text + repr(r.headers) for r in replies)
    for secret in [*secrets, "pw-logscan"]:
        assert secret not in everything
    assert "is now revoked" in caplog.text, "the failover is logged, by key id"


def test_an_upstream_error_that_echoes_the_key_is_scrubbed():
    from gateway.providers import scrub_secret

    body = b'{"error": {"message": "Incorrect API key provided: sk-live-abcdefgh1234. or ...1234"}}'
    cleaned = scrub_secret(body, "sk-live-abcdefgh1234")
    assert b"abcdefgh" not in cleaned and b"...1234" not in cleaned
