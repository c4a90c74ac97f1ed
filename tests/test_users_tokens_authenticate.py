"""What an admin does to a user is what that user's token does next, through the official SDKs (GATEKEEPER=user_token).

Authentication itself is admission's (accounts/admission.py); these tests hold the
users' side to it: a created, imported, restored or rotated token works, and a
rotated, disabled or deleted one stops at once.
"""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import openai
import pytest
from checks_support import admin
from test_users_import import FOX_TOKEN, OAI_RP_EXPORT, import_users
from users_support import create_user, start_with_admin

from gateway.settings import GATEKEEPERS

pytestmark = pytest.mark.skipif(
    "user_token" not in GATEKEEPERS, reason="GATEKEEPER=user_token (admission) is not on this branch yet"
)

HELLO = [{"role": "user", "content": "hello"}]


def start(start_gateway: Any, **env: str) -> Any:
    return start_with_admin(start_gateway, GATEKEEPER="user_token", ANTHROPIC_KEY="sk-ant-users-test-0002", **env)


def chat(gateway: Any, token: str) -> str:
    client = openai.OpenAI(base_url=gateway.url + "/proxy/openai/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


def refused(gateway: Any, token: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        chat(gateway, token)
    return caught.value


def test_a_created_users_token_works_with_both_sdks(start_gateway: Any) -> None:
    gateway = start(start_gateway)
    _, token = create_user(gateway, nickname="ann")

    claude = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0)
    message = claude.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]

    assert chat(gateway, token)
    assert message.content
    assert refused(gateway, token[:-1] + ("A" if token[-1] != "A" else "B")).status_code == 401


def test_a_rotated_token_stops_at_once_and_the_new_one_works(start_gateway: Any) -> None:
    gateway = start(start_gateway)
    user, old = create_user(gateway)
    assert chat(gateway, old)

    new = admin(gateway, "POST", f"/users/{user['id']}/rotate-token").json()["token"]

    assert refused(gateway, old).status_code == 401
    assert chat(gateway, new)


def test_disable_refuses_with_the_reason_and_enable_lets_the_user_back(start_gateway: Any) -> None:
    gateway = start(start_gateway)
    user, token = create_user(gateway)

    admin(gateway, "POST", f"/users/{user['id']}/disable", json={"reason": "took a break"})
    while_disabled = refused(gateway, token)
    admin(gateway, "POST", f"/users/{user['id']}/enable")

    assert while_disabled.status_code == 403 and "took a break" in while_disabled.message
    assert chat(gateway, token)


def test_a_deleted_users_token_is_unknown(start_gateway: Any) -> None:
    gateway = start(start_gateway)
    user, token = create_user(gateway)
    assert chat(gateway, token)

    admin(gateway, "DELETE", f"/users/{user['id']}")

    assert refused(gateway, token).status_code == 401


def test_a_quota_set_through_the_admin_api_is_what_admission_enforces(start_gateway: Any) -> None:
    gateway = start(start_gateway, TOKEN_QUOTA_GPT_4O_MINI="5")
    _, limited = create_user(gateway)
    _, own = create_user(gateway, quotas={"gpt-4o-mini": 0})

    over = refused(gateway, limited)

    assert over.status_code == 429 and "gpt-4o-mini" in over.message
    assert chat(gateway, own), "the user's own quota (0: unlimited) wins over the default"


def test_oai_reverse_proxy_tokens_work_after_import_and_after_a_restore_into_a_fresh_store(
    start_gateway: Any,
) -> None:
    old = start(start_gateway)
    import_users(old, OAI_RP_EXPORT)
    assert chat(old, FOX_TOKEN)
    exported = admin(old, "GET", "/users/export").json()
    fresh = start(start_gateway, REDIS_PREFIX=f"poolgate-fresh-{uuid.uuid4().hex[:8]}:")
    assert refused(fresh, FOX_TOKEN).status_code == 401

    import_users(fresh, exported)

    assert chat(fresh, FOX_TOKEN)
    fox = admin(fresh, "GET", "/users?nickname=anon-fox").json()["users"][0]
    assert fox["prompt_count"] == 44, "42 imported, one before the export, one after the restore"
