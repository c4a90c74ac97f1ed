"""Admission across real processes and a store that goes away: bans outlive a gateway, outages refuse cleanly."""

from __future__ import annotations

import shutil
import uuid

import anthropic
import httpx
import openai
import pytest
import redis
from processes import OwnRedis
from test_settings_and_cli import gateway_from_the_command_line

from accounts.schema import AccountsSchema, token_hash

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def own_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this")
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.kill()


def write_user(redis_url: str, prefix: str, token: str) -> str:
    """A user as the users' admin API stores one (the hash and the token's index entry)."""
    schema, user_id = AccountsSchema(prefix), uuid.uuid4().hex[:12]
    client = redis.Redis.from_url(redis_url)
    client.hset(schema.user(user_id), mapping={"id": user_id, "token_hash": token_hash(token), "type": "normal"})
    client.hset(schema.user_tokens, token_hash(token), user_id)
    client.close()
    return user_id


def test_a_ban_survives_restarting_the_gateway_process(tmp_path, own_redis):
    prefix, token = "restart-test:", "pg-restart-token-0001"
    user_id = write_user(own_redis.url, prefix, token)
    env = {"OPENAI_KEY": "sk-restart-0001", "GATEKEEPER": "user_token", "REDIS_URL": own_redis.url,
           "REDIS_PREFIX": prefix, "CHECK_KEYS": "false", "RATE_LIMITER": "true",
           "RATE_LIMIT_USER_PER_MINUTE": "1", "RATE_LIMIT_USER_BAN_AFTER": "2"}
    auth = {"authorization": f"Bearer {token}"}
    with gateway_from_the_command_line(tmp_path, env) as (url, logs):
        assert [httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth).status_code
                for _ in range(3)] == [200, 429, 403]
    assert token not in "".join(logs)
    with gateway_from_the_command_line(tmp_path, env) as (url, _):
        refused = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth)
        assert refused.status_code == 403
        assert "Banned" in refused.json()["error"]["message"]
    assert redis.Redis.from_url(own_redis.url).hexists(AccountsSchema(prefix).bans, f"user:{user_id}")


def test_a_store_outage_is_503_in_each_dialect_and_nothing_goes_upstream_uncounted(start_gateway, upstream,
                                                                                    own_redis, store_url):
    if not store_url:
        pytest.skip("this test brings its own Redis to stop; the redis variant is the one run")
    gateway = start_gateway(OPENAI_KEY="sk-real-openai-key-1234", ANTHROPIC_KEY="sk-ant-real-key-5678",
                            GATEKEEPER="user_token", REDIS_URL=own_redis.url)
    token = "pg-outage-token-0001"
    write_user(own_redis.url, gateway.app.settings.redis_prefix, token)
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {token}"}).status_code == 200
    own_redis.kill()
    with pytest.raises(openai.InternalServerError) as caught:
        openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=token, max_retries=0).chat.completions.create(
            **CHAT)
    assert caught.value.status_code == 503
    assert caught.value.body["code"] == "store_unavailable"
    with pytest.raises(anthropic.APIStatusError) as refused:
        anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0).messages.create(
            **MESSAGE)
    assert refused.value.status_code == 503
    assert refused.value.body["type"] == "error"
    assert len(upstream.requests) == 1  # no request was served that the store could not count
