"""Admission with users made and managed through the users' admin API, as an operator runs it."""

from __future__ import annotations

import httpx
import openai
import pytest
from checks_support import ADMIN_KEY, admin
from processes import wait_for
from users_support import create_user, get_user

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


def chat(gateway, token):
    return httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {token}"})


@pytest.fixture
def gateway(start_gateway):
    return start_gateway(OPENAI_KEY="sk-flow-key-0001", ADMIN_KEY=ADMIN_KEY, GATEKEEPER="user_token",
                         RATE_LIMITER="true", RATE_LIMIT_USER_PER_MINUTE="2", RATE_LIMIT_USER_BAN_AFTER="2",
                         TOKEN_QUOTA_GPT_4O_MINI="100000", QUOTA_REFRESH_PERIOD="daily")


def test_an_admin_made_user_is_served_limited_banned_and_lifted_by_enable(gateway):
    user, token = create_user(gateway, nickname="ada")
    reply = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0).chat.completions.create(**CHAT)
    assert reply.choices
    assert [chat(gateway, token).status_code for _ in range(3)] == [200, 429, 403]
    bans = admin(gateway, "GET", "/bans").json()["bans"]
    assert [b["identity"] for b in bans] == [f"user:{user['id']}"]
    assert admin(gateway, "POST", f"/users/{user['id']}/enable").status_code == 200
    assert admin(gateway, "GET", "/bans").json()["bans"] == []
    # Enable lifts the ban, the block, the strikes and the windows, as DELETE /admin/bans does: served at once.
    assert chat(gateway, token).status_code == 200


def test_disable_rotate_and_quota_through_the_admin_api(gateway):
    user, token = create_user(gateway, nickname="bo", quotas={"gpt-4o-mini": 20})  # the output asked for, no prompt
    refused = chat(gateway, token)
    assert refused.status_code == 429
    assert "Token quota exceeded for gpt-4o-mini" in refused.json()["error"]["message"]
    assert "It refreshes at" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) <= 86_400  # QUOTA_REFRESH_PERIOD=daily: by tomorrow's midnight
    assert admin(gateway, "PATCH", f"/users/{user['id']}", json={"quotas": {"gpt-4o-mini": 0}}).status_code == 200
    assert chat(gateway, token).status_code == 200
    assert wait_for(lambda: get_user(gateway, user["id"]).json()["user"]["prompt_count"] == 1)
    disabled = admin(gateway, "POST", f"/users/{user['id']}/disable", json={"reason": "Taking a break."})
    assert disabled.status_code == 200
    refused = chat(gateway, token)
    assert refused.status_code == 403 and "Taking a break." in refused.json()["error"]["message"]
    admin(gateway, "POST", f"/users/{user['id']}/enable")
    rotated = admin(gateway, "POST", f"/users/{user['id']}/rotate-token").json()["token"]
    assert chat(gateway, token).status_code == 401
    assert chat(gateway, rotated).status_code == 200
