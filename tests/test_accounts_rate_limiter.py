"""The rate limiter: Pico's minute and hour limits, blocks and bans, fixed, persisted, and shared by every process."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from accounts_support import make_user

from accounts.schema import AccountsSchema
from gateway.settings import Settings

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
ADMIN = "admin-s3cret-key"
LIMITED = dict(
    OPENAI_KEY="sk-real-openai-key-1234", ANTHROPIC_KEY="sk-ant-real-key-5678", GATEKEEPER="user_token",
    ADMIN_KEY=ADMIN, RATE_LIMITER="true", RATE_LIMIT_USER_PER_MINUTE="3", RATE_LIMIT_USER_PER_HOUR="100",
    RATE_LIMIT_USER_BAN_AFTER="3",
)


def chat(gateway, token, **headers):
    return httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {token}", **headers})


def bans(gateway):
    reply = httpx.get(gateway.url + "/admin/bans", headers={"authorization": f"Bearer {ADMIN}"})
    assert reply.status_code == 200, reply.text
    return reply.json()["bans"]


def test_over_the_minute_limit_is_429_with_the_proxys_own_limit_then_blocked_then_banned(start_gateway, upstream):
    gateway = start_gateway(**LIMITED)
    _, token = make_user(gateway)
    assert [chat(gateway, token).status_code for _ in range(3)] == [200, 200, 200]
    limited = chat(gateway, token)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "300"  # RATE_LIMIT_MINUTE_BLOCK_SEC
    assert limited.headers["x-ratelimit-limit-requests"] == "3"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert limited.headers["x-ratelimit-reset-requests"] == "300s"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert "3 requests a minute" in limited.json()["error"]["message"]
    # Still blocked: the block, not the window, decides now (Pico's minute branch looked at the hour).
    with pytest.raises(anthropic.RateLimitError) as blocked:
        anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0).messages.create(
            **MESSAGE)
    assert blocked.value.response.headers["x-ratelimit-limit-requests"] == "3"
    assert int(blocked.value.response.headers["retry-after"]) <= 300
    # The third refused request is the ban; from then on, 403 until an admin lifts it.
    with pytest.raises(openai.PermissionDeniedError) as banned:
        openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=token, max_retries=0).chat.completions.create(
            **CHAT)
    assert "Banned" in banned.value.body["message"]
    assert chat(gateway, token).status_code == 403
    assert len(upstream.requests) == 3


def test_a_ban_is_seen_by_every_process_survives_a_restart_and_is_lifted_by_an_admin(start_gateway, store_url):
    if not store_url:
        pytest.skip("two processes and a restart share state only through Redis; the embedded store is one process")
    first = start_gateway(**LIMITED)
    second = start_gateway(**LIMITED)
    user_id, token = make_user(first)
    # The windows are shared: requests through both processes count against one limit.
    assert [chat(g, token).status_code for g in (first, second, first, second)] == [200, 200, 200, 429]
    assert [chat(g, token).status_code for g in (first, second)] == [429, 403]
    assert chat(first, token).status_code == 403
    assert [b["identity"] for b in bans(second)] == [f"user:{user_id}"]
    # A new gateway process on the same store: the ban is still there.
    restarted = start_gateway(**LIMITED)
    assert chat(restarted, token).status_code == 403
    lifted = httpx.delete(f"{restarted.url}/admin/bans/user:{user_id}", headers={"authorization": f"Bearer {ADMIN}"})
    assert lifted.status_code == 200
    assert chat(first, token).status_code == 200  # lifting also ended the block and forgot the strikes
    assert bans(second) == []
    again = httpx.delete(f"{first.url}/admin/bans/user:{user_id}", headers={"authorization": f"Bearer {ADMIN}"})
    assert again.status_code == 404


def test_anonymous_callers_share_one_bucket_and_a_ban_falls_on_the_address_that_kept_asking(start_gateway, upstream):
    gateway = start_gateway(
        OPENAI_KEY="sk-real-openai-key-1234", ADMIN_KEY=ADMIN, RATE_LIMITER="true", RATE_LIMIT_ANON_PER_MINUTE="2",
        RATE_LIMIT_ANON_BAN_AFTER="2", RATE_LIMIT_MINUTE_BLOCK_SEC="600",
    )
    first, second, third = ({"x-forwarded-for": f"198.51.100.{n}"} for n in (1, 2, 3))
    assert [httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=who).status_code
            for who in (first, second)] == [200, 200]
    limited = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=third)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "600"
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=third).status_code == 403
    assert [b["identity"] for b in bans(gateway)] == ["ip:198.51.100.3"]
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=first).status_code == 429
    assert len(upstream.requests) == 2
    lifted = httpx.delete(gateway.url + "/admin/bans/ip:198.51.100.3", headers={"authorization": f"Bearer {ADMIN}"})
    assert lifted.status_code == 200
    # No longer banned: the address is back with everyone else, whose shared bucket is still blocked.
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=third).status_code == 429


def test_special_users_are_not_limited(start_gateway, upstream):
    gateway = start_gateway(**LIMITED)
    _, token = make_user(gateway, type="special")
    assert [chat(gateway, token).status_code for _ in range(6)] == [200] * 6


def test_over_the_hour_limit_blocks_for_the_hour_block(start_gateway):
    gateway = start_gateway(**{**LIMITED, "RATE_LIMIT_USER_PER_MINUTE": "0", "RATE_LIMIT_USER_PER_HOUR": "2",
                               "RATE_LIMIT_HOUR_BLOCK_SEC": "1800"})
    _, token = make_user(gateway)
    assert [chat(gateway, token).status_code for _ in range(2)] == [200, 200]
    limited = chat(gateway, token)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1800"
    assert "2 requests an hour" in limited.json()["error"]["message"]


def test_the_limiter_is_off_unless_turned_on(start_gateway):
    gateway = start_gateway(**{**LIMITED, "RATE_LIMITER": "false"})
    _, token = make_user(gateway)
    assert [chat(gateway, token).status_code for _ in range(5)] == [200] * 5


def test_pico_and_oai_reverse_proxy_names_are_read_as_the_limiters_settings():
    pico = Settings.from_env({"enableRateLimiter": "true", "userMinuteRateLimit": "7", "userHourlyRateLimit": "70",
                              "userPermanentBlock": "9", "anonMinuteRateLimit": "11", "anonHourlyRateLimit": "110",
                              "anonPermanentBlock": "13"}, env_file=None)
    assert (pico.rate_limiter, pico.rate_limit_user_per_minute, pico.rate_limit_user_per_hour,
            pico.rate_limit_user_ban_after, pico.rate_limit_anon_per_minute, pico.rate_limit_anon_per_hour,
            pico.rate_limit_anon_ban_after) == (True, 7, 70, 9, 11, 110, 13)
    oai_rp = Settings.from_env({"TEXT_MODEL_RATE_LIMIT": "4", "IMAGE_MODEL_RATE_LIMIT": "2"}, env_file=None)
    assert (oai_rp.rate_limit_user_per_minute, oai_rp.rate_limit_anon_per_minute, oai_rp.image_model_rate_limit) == \
        (4, 4, 2)
    # Our own name wins over an alias when both are set.
    both = Settings.from_env({"RATE_LIMIT_USER_PER_MINUTE": "5", "userMinuteRateLimit": "7"}, env_file=None)
    assert both.rate_limit_user_per_minute == 5


def test_a_block_outlasts_the_window_that_caused_it(start_gateway):
    """A minute after the limit was passed, the window is empty again, yet the block (300 s) still refuses.

    The minute going by is stood in for by emptying the window in the store, as time would.
    """
    gateway = start_gateway(**LIMITED)
    user_id, token = make_user(gateway)
    assert [chat(gateway, token).status_code for _ in range(4)] == [200, 200, 200, 429]
    schema = AccountsSchema(gateway.app.settings.redis_prefix)
    gateway.run(gateway.app.store.delete(schema.limit_minute(f"user:{user_id}")))
    still = chat(gateway, token)
    assert still.status_code == 429
    assert still.headers["x-ratelimit-limit-requests"] == "3"
    gateway.run(gateway.app.store.delete(schema.limit_block(f"user:{user_id}")))  # and now the block is over
    assert chat(gateway, token).status_code == 200
