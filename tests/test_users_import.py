"""Importing users: the OAI Reverse Proxy's export (its plaintext tokens keep working) and our own, all or nothing."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import httpx
import pytest
from checks_support import admin
from users_support import create_user, everything_stored, start_with_admin, token_owner

from accounts.schema import token_hash

FOX_TOKEN = "8f14e45f-ceea-467f-a0e6-3d3c5a2b1f10"
TEMP_TOKEN = "c9f0f895-fb98-4b91-9d1e-6a2a1d9e7a11"
SPECIAL_TOKEN = "45c48cce-2e2d-4fbd-a1c6-a1f3a93bd222"

# Shaped like the OAI Reverse Proxy's user export: newer versions count {input, output} per family, older ones a
# number; families are its own names, cloud variants included, and some poolgate does not serve.
OAI_RP_EXPORT: dict[str, Any] = {"users": [
    {
        "token": FOX_TOKEN, "ip": ["203.0.113.5", "198.51.100.7"], "nickname": "anon-fox", "type": "normal",
        "promptCount": 42,
        "tokenCounts": {"gpt4o": {"input": 1200, "output": 300}, "claude": {"input": 50, "output": 25},
                        "aws-claude": {"input": 5, "output": 5}, "gemini-pro": {"input": 9, "output": 9}},
        "tokenLimits": {"gpt4o": {"input": 0, "output": 0, "legacy_total": 200000}, "claude": 100000},
        "tokenRefresh": {"gpt4o": 50000},
        "createdAt": 1700000000000, "lastUsedAt": 1700000500000, "maxIps": 4, "adminNote": "a friend",
        "meta": {"discord": "fox#1"},
    },
    {
        "token": TEMP_TOKEN, "ip": [], "type": "temporary", "promptCount": 0, "tokenCounts": {},
        "tokenLimits": {"gpt4o": 1000}, "tokenRefresh": {}, "createdAt": 1700000000001, "expiresAt": 1900000000000,
    },
    {
        "token": SPECIAL_TOKEN, "ip": [], "type": "special", "promptCount": 3, "tokenCounts": {"turbo": 5},
        "tokenLimits": {}, "tokenRefresh": {}, "createdAt": 1700000000002, "disabledAt": 1700000600000,
        "disabledReason": "abuse",
    },
]}


def users_of(gateway: Any) -> list[dict[str, Any]]:
    reply = admin(gateway, "GET", "/users?per_page=500")
    assert reply.status_code == 200, reply.text
    return reply.json()["users"]  # type: ignore[no-any-return]


def import_users(gateway: Any, document: Any) -> httpx.Response:
    return admin(gateway, "POST", "/users/import", content=json.dumps(document),
                 headers={"content-type": "application/json"})


def test_an_oai_reverse_proxy_export_imports_with_its_tokens_counts_and_limits(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)

    reply = import_users(gateway, OAI_RP_EXPORT)
    fox, temporary, special = users_of(gateway)

    assert reply.status_code == 200, reply.text
    assert reply.json() == {"imported": 3, "replaced": 0, "ignored_families": ["gemini-pro"]}
    assert (fox["nickname"], fox["type"], fox["prompt_count"], fox["max_ips"]) == ("anon-fox", "normal", 42, 4)
    assert (fox["created_at"], fox["last_used_at"], fox["note"]) == (1700000000000, 1700000500000, "a friend")
    assert fox["quotas"]["gpt-4o"] == {"limit": 200000, "used": 1500, "refresh": 50000, "input": 1200, "output": 300}
    assert fox["quotas"]["claude-sonnet"]["used"] == 85, "claude and aws-claude count together"
    assert fox["quotas"]["claude-sonnet"]["limit"] == 100000
    assert [ip["address"] for ip in fox["ips"]] == ["203.0.113.5", "198.51.100.7"]
    assert fox["meta"] == {"discord": "fox#1"} and fox["token_hint"] == "..." + FOX_TOKEN[-4:]
    assert (temporary["type"], temporary["expires_at"]) == ("temporary", 1900000000000)
    assert temporary["quotas"]["gpt-4o"]["limit"] == 1000
    assert (special["type"], special["disabled_at"], special["disabled_reason"]) == ("special", 1700000600000, "abuse")
    assert special["quotas"]["turbo"]["used"] == 5
    # The old plaintext tokens find their users (what GATEKEEPER=user_token looks up), and are stored nowhere.
    for token, user in ((FOX_TOKEN, fox), (TEMP_TOKEN, temporary), (SPECIAL_TOKEN, special)):
        assert token_owner(gateway, token_hash(token)) == user["id"]
        assert token not in everything_stored(gateway)


def test_importing_the_same_oai_reverse_proxy_export_again_updates_the_same_users(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    import_users(gateway, OAI_RP_EXPORT)
    before = {u["nickname"]: u["id"] for u in users_of(gateway)}
    later = copy.deepcopy(OAI_RP_EXPORT)
    later["users"][0]["promptCount"] = 50

    reply = import_users(gateway, later)

    assert reply.json()["replaced"] == 3
    assert {u["nickname"]: u["id"] for u in users_of(gateway)} == before
    assert users_of(gateway)[0]["prompt_count"] == 50


def test_the_round_trip_oai_reverse_proxy_then_export_then_a_fresh_store_keeps_users_and_tokens(
    start_gateway: Any,
) -> None:
    old = start_with_admin(start_gateway)
    import_users(old, OAI_RP_EXPORT)
    created, made_here = create_user(old, nickname="made here", public=True, refresh={"gpt-4o": 10})
    exported = admin(old, "GET", "/users/export")
    fresh = start_with_admin(start_gateway, REDIS_PREFIX=f"poolgate-fresh-{uuid.uuid4().hex[:8]}:")
    assert users_of(fresh) == []

    reply = import_users(fresh, exported.json())

    assert exported.status_code == 200 and exported.json()["format"] == "poolgate-users"
    assert all(len(u["token_hash"]) == 64 for u in exported.json()["users"])
    assert reply.status_code == 200, reply.text
    assert reply.json()["imported"] == 4
    assert users_of(fresh) == users_of(old), "the same users, field for field"
    for token in (FOX_TOKEN, TEMP_TOKEN, SPECIAL_TOKEN, made_here):
        assert token_owner(fresh, token_hash(token)) == token_owner(old, token_hash(token)) is not None
    assert created["id"] in [u["id"] for u in users_of(fresh)]
    assert made_here not in exported.text


def _with(index: int, **changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(OAI_RP_EXPORT)
    for name, value in changes.items():
        if value is _DROP:
            del document["users"][index][name]
        else:
            document["users"][index][name] = value
    return document


_DROP = object()
OWN_RECORD = {"id": "0123456789abcdef", "token_hash": "0" * 64}


@pytest.mark.parametrize(
    ("document", "named"),
    [
        (_with(1, type="admin"), "users[1].type"),
        (_with(2, token=_DROP), "users[2].token"),
        (_with(1, token_hash="0" * 64), "users[1].token"),
        (_with(1, expiresAt=_DROP), "users[1].expiresAt"),
        (_with(2, tokenCounts={"gpt4o": -5}), "users[2].tokenCounts.gpt4o"),
        (_with(2, tokenLimits={"gpt4o": {"input": "lots"}}), "users[2].tokenLimits.gpt4o.input"),
        (_with(1, ip="203.0.113.5"), "users[1].ip"),
        (_with(1, maxIps=-1), "users[1].maxIps"),
        (_with(2, token=FOX_TOKEN), "users[2].token"),
        (_with(1, createdAt="yesterday"), "users[1].createdAt"),
        ({"users": [{"token": "ok-1"}, 7]}, "users[1].(record)"),
        ({"people": []}, "users[0].users"),
        ({"users": [{"id": "nothex", "token_hash": "0" * 64}]}, "users[0].id"),
        ({"users": [{**OWN_RECORD, "quotas": {"gpt-9": {}}}]}, "users[0].quotas.gpt-9"),
        ({"users": [{**OWN_RECORD, "token_hash": "zz"}]}, "users[0].token_hash"),
        ({"users": [{**OWN_RECORD, "password": "x"}]}, "users[0].password"),
        ({"users": [OWN_RECORD, {**OWN_RECORD, "token_hash": "2" * 64}]}, "users[1].id"),
    ],
)
def test_a_bad_record_is_named_and_nothing_is_imported(start_gateway: Any, document: Any, named: str) -> None:
    gateway = start_with_admin(start_gateway)

    reply = import_users(gateway, document)

    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"].startswith(f"Nothing was imported: {named}:")
    assert users_of(gateway) == []
    assert FOX_TOKEN not in reply.text


def test_a_restored_user_may_not_take_another_users_token(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    _, token = create_user(gateway, nickname="owner")
    document = {"users": [
        {"id": "0123456789abcdef", "token_hash": "1" * 64, "nickname": "fine"},
        {"id": "fedcba9876543210", "token_hash": token_hash(token), "nickname": "thief"},
    ]}

    reply = import_users(gateway, document)

    assert reply.status_code == 400 and "users[1].token_hash" in reply.json()["error"]["message"]
    assert [u["nickname"] for u in users_of(gateway)] == ["owner"]


def test_import_takes_a_bare_list_too(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)

    reply = import_users(gateway, OAI_RP_EXPORT["users"][:1])

    assert reply.status_code == 200 and reply.json()["imported"] == 1
    assert users_of(gateway)[0]["nickname"] == "anon-fox"
