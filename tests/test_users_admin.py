"""The users admin API: what an admin creates, sees and changes, on both stores, and never a token after creation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from checks_support import ADMIN_KEY, admin
from processes import OwnRedis
from users_support import (
    create_user,
    everything_stored,
    get_user,
    key_exists,
    schema_of,
    set_fields,
    start_with_admin,
    store_fields,
    token_owner,
)

from accounts.schema import token_hash

FAMILIES_EXAMPLE = ("gpt-4o", "gpt-4o-mini", "claude-opus")


def error_of(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"], body
    return str(body["error"]["message"])


# --- creating and reading ----------------------------------------------------------------------------------------


def test_a_new_user_gets_a_token_once_and_the_store_keeps_only_its_hash(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)

    user, token = create_user(gateway, nickname="ann")
    shown = [get_user(gateway, user["id"]), admin(gateway, "GET", "/users"), admin(gateway, "GET", "/users/export")]

    assert token.startswith("pg-") and len(token) >= 40
    assert user["nickname"] == "ann" and user["type"] == "normal" and user["token_hint"] == "..." + token[-4:]
    assert user["created_at"] > 0 and user["disabled_at"] is None and user["prompt_count"] == 0
    assert token_owner(gateway, token_hash(token)) == user["id"], "the token finds its user through its hash"
    for reply in shown:
        assert reply.status_code == 200
        assert token not in reply.text
    assert token_hash(token) not in shown[0].text + shown[1].text, "only the export carries the hash"
    assert token not in everything_stored(gateway), "a copy of the store gives no working token"


def test_two_users_never_share_a_token(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)

    tokens = {create_user(gateway)[1] for _ in range(5)}

    assert len(tokens) == 5


def test_new_users_get_the_default_quotas_under_their_own(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway, TOKEN_QUOTA_GPT_4O="100000", TOKEN_QUOTA_CLAUDE_OPUS="20000")

    plain, _ = create_user(gateway)
    own, _ = create_user(gateway, quotas={"claude-opus": 500, "gpt-4o-mini": 7}, refresh={"claude-opus": 100})

    assert plain["quotas"]["gpt-4o"]["limit"] == 100000 and plain["quotas"]["claude-opus"]["limit"] == 20000
    assert plain["quotas"]["gpt-4o-mini"]["limit"] == 0, "0: unlimited, the default"
    assert own["quotas"]["gpt-4o"]["limit"] == 100000
    assert own["quotas"]["claude-opus"] == {"limit": 500, "used": 0, "refresh": 100, "input": 0, "output": 0}
    assert own["quotas"]["gpt-4o-mini"]["limit"] == 7


def test_the_oai_reverse_proxys_quota_settings_are_read_too_and_ours_win(start_gateway: Any) -> None:
    gateway = start_with_admin(
        start_gateway, TOKEN_QUOTA_GPT4O="5000", TOKEN_QUOTA_CLAUDE="700", TOKEN_QUOTA_CLAUDE_SONNET="900",
        TOKEN_QUOTA_O3="30",
    )

    quotas = create_user(gateway)[0]["quotas"]

    assert quotas["gpt-4o"]["limit"] == 5000 and quotas["o-series"]["limit"] == 30
    assert quotas["claude-sonnet"]["limit"] == 900, "TOKEN_QUOTA_CLAUDE_SONNET over the legacy TOKEN_QUOTA_CLAUDE"


def test_a_temporary_user_needs_an_expiry(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)

    missing = admin(gateway, "POST", "/users", json={"type": "temporary"})
    temporary, _ = create_user(gateway, type="temporary", expires_at=1_900_000_000_000, quotas={"gpt-4o": 10})

    assert missing.status_code == 400 and "expires_at" in error_of(missing)
    assert temporary["type"] == "temporary" and temporary["expires_at"] == 1_900_000_000_000
    assert temporary["quotas"]["gpt-4o"]["limit"] == 10


# --- listing --------------------------------------------------------------------------------------------------------


def test_users_are_listed_a_page_at_a_time_sorted_and_filtered(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    ids = {}
    for nickname, kind in [("delta", "normal"), ("Alpha", "special"), ("charlie", "normal"), ("bravo", "special"),
                           ("echo-alpha", "normal")]:
        ids[nickname] = create_user(gateway, nickname=nickname, type=kind)[0]["id"]
    admin(gateway, "POST", f"/users/{ids['charlie']}/disable", json={"reason": "spam"})

    def listed(query: str) -> dict[str, Any]:
        reply = admin(gateway, "GET", "/users" + query)
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]

    first, second = listed("?per_page=2&page=1"), listed("?per_page=2&page=3")
    by_nickname = listed("?sort=nickname&order=desc")
    special = listed("?type=special&sort=nickname")
    disabled, enabled = listed("?disabled=true"), listed("?disabled=false")
    alpha = listed("?nickname=ALPHA&sort=nickname")

    assert [u["nickname"] for u in first["users"]] == ["delta", "Alpha"], "oldest first by default"
    assert first["total"] == 5 and (first["page"], first["per_page"]) == (1, 2)
    assert [u["nickname"] for u in second["users"]] == ["echo-alpha"]
    assert [u["nickname"] for u in by_nickname["users"]] == ["echo-alpha", "delta", "charlie", "bravo", "Alpha"]
    assert [u["nickname"] for u in special["users"]] == ["Alpha", "bravo"] and special["total"] == 2
    assert [u["nickname"] for u in disabled["users"]] == ["charlie"] and enabled["total"] == 4
    assert [u["nickname"] for u in alpha["users"]] == ["Alpha", "echo-alpha"]


def test_users_sort_by_prompt_count(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    ids = [create_user(gateway, nickname=name)[0]["id"] for name in ("few", "many", "none")]
    set_fields(gateway, schema_of(gateway).user(ids[0]), prompt_count=3)  # as settlement counts them
    set_fields(gateway, schema_of(gateway).user(ids[1]), prompt_count=40)

    reply = admin(gateway, "GET", "/users?sort=prompt_count&order=desc")

    assert [u["nickname"] for u in reply.json()["users"]] == ["many", "few", "none"]


# --- changing -------------------------------------------------------------------------------------------------------


def test_patch_changes_fields_and_null_removes_them(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    user, _ = create_user(gateway, nickname="old", note="remember", max_ips=3, refresh={"gpt-4o": 50})

    changed = admin(gateway, "PATCH", f"/users/{user['id']}", json={
        "nickname": "new", "type": "special", "quotas": {"gpt-4o": 999}, "public": True, "note": None,
        "max_ips": None, "refresh": {"gpt-4o": None},
    })
    shown = get_user(gateway, user["id"]).json()["user"]

    assert changed.status_code == 200, changed.text
    assert changed.json()["user"] == shown
    assert (shown["nickname"], shown["type"], shown["public"]) == ("new", "special", True)
    assert shown["note"] is None and shown["max_ips"] is None
    assert shown["quotas"]["gpt-4o"]["limit"] == 999 and shown["quotas"]["gpt-4o"]["refresh"] is None
    assert shown["created_at"] == user["created_at"]


def test_disable_gives_a_reason_and_enable_lifts_the_limiters_ban_too(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    user, _ = create_user(gateway)
    uid, s = user["id"], schema_of(gateway)

    disabled = admin(gateway, "POST", f"/users/{uid}/disable", json={"reason": "shared the token on a forum"})
    # What the rate limiter leaves on a user who kept asking while limited (accounts/schema.py):
    set_fields(gateway, s.bans, **{f"user:{uid}": "1700000000000|too many requests", "ip:203.0.113.9": "1|other"})
    gateway.run(gateway.app.store.set(s.limit_block(f"user:{uid}"), "1", px=600_000))
    gateway.run(gateway.app.store.set(s.limit_strikes(f"user:{uid}"), "7"))
    enabled = admin(gateway, "POST", f"/users/{uid}/enable")

    assert disabled.status_code == 200
    assert disabled.json()["user"]["disabled_reason"] == "shared the token on a forum"
    assert disabled.json()["user"]["disabled_at"] >= user["created_at"]
    assert enabled.status_code == 200
    assert enabled.json()["user"]["disabled_at"] is None and enabled.json()["user"]["disabled_reason"] is None
    assert store_fields(gateway, s.bans) == {"ip:203.0.113.9": "1|other"}, "only this user's ban is lifted"
    assert not key_exists(gateway, s.limit_block(f"user:{uid}"))
    assert not key_exists(gateway, s.limit_strikes(f"user:{uid}"))


def test_disable_without_a_body_has_a_default_reason(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    uid = create_user(gateway)[0]["id"]

    reply = admin(gateway, "POST", f"/users/{uid}/disable")

    assert reply.status_code == 200 and reply.json()["user"]["disabled_reason"] == "disabled by an admin"


def test_a_rotated_token_replaces_the_old_one_at_once(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    user, old = create_user(gateway)

    reply = admin(gateway, "POST", f"/users/{user['id']}/rotate-token")
    new = reply.json()["token"]

    assert reply.status_code == 200 and new != old and new.startswith("pg-")
    assert reply.json()["user"]["token_hint"] == "..." + new[-4:]
    assert token_owner(gateway, token_hash(old)) is None, "the old token finds nobody"
    assert token_owner(gateway, token_hash(new)) == user["id"]
    assert new not in get_user(gateway, user["id"]).text


def test_refresh_quota_takes_back_the_refresh_amount_or_everything(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    user, _ = create_user(gateway, quotas={"gpt-4o": 1000, "claude-opus": 1000}, refresh={"gpt-4o": 300})
    # What settlement counted against the quotas:
    set_fields(gateway, schema_of(gateway).user(user["id"]), **{"used:gpt-4o": 900, "used:claude-opus": 800})

    once = admin(gateway, "POST", f"/users/{user['id']}/refresh-quota").json()["user"]["quotas"]
    twice = admin(gateway, "POST", f"/users/{user['id']}/refresh-quota").json()["user"]["quotas"]
    three = admin(gateway, "POST", f"/users/{user['id']}/refresh-quota").json()["user"]["quotas"]
    thrice = admin(gateway, "POST", f"/users/{user['id']}/refresh-quota").json()["user"]["quotas"]

    assert (once["gpt-4o"]["used"], once["claude-opus"]["used"]) == (600, 0)
    assert [q["gpt-4o"]["used"] for q in (twice, three, thrice)] == [300, 0, 0], "never below 0"


def test_deleting_a_user_removes_its_token_addresses_and_limiter_state(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    keep, _ = create_user(gateway, nickname="keep")
    user, token = create_user(gateway, nickname="gone", public=True)
    uid, s = user["id"], schema_of(gateway)
    gateway.run(gateway.app.store.zadd(s.user_ips(uid), {"198.51.100.4": 1}))  # as admission records addresses
    set_fields(gateway, s.bans, **{f"user:{uid}": "1|spam"})
    gateway.run(gateway.app.store.set(s.limit_strikes(f"user:{uid}"), "3"))
    gateway.run(gateway.app.store.zadd(s.limit_image(f"user:{uid}"), {"request-1": 1}))

    deleted = admin(gateway, "DELETE", f"/users/{uid}")
    again = admin(gateway, "DELETE", f"/users/{uid}")

    assert deleted.status_code == 200 and deleted.json() == {"deleted": uid}
    assert again.status_code == 404 and get_user(gateway, uid).status_code == 404
    assert [u["id"] for u in admin(gateway, "GET", "/users").json()["users"]] == [keep["id"]]
    assert token_owner(gateway, token_hash(token)) is None
    assert not key_exists(gateway, s.user_ips(uid)) and not key_exists(gateway, s.limit_strikes(f"user:{uid}"))
    assert not key_exists(gateway, s.limit_image(f"user:{uid}"))
    assert f"user:{uid}" not in store_fields(gateway, s.bans)
    assert uid not in everything_stored(gateway)


def test_a_user_created_through_one_gateway_is_seen_by_another_at_once(start_gateway: Any, store_url: str) -> None:
    if not store_url:
        pytest.skip("the embedded store belongs to one process")
    first, second = start_with_admin(start_gateway), start_with_admin(start_gateway)

    user, token = create_user(first, nickname="shared")
    seen = get_user(second, user["id"])
    admin(second, "POST", f"/users/{user['id']}/disable", json={"reason": "seen by both"})

    assert seen.status_code == 200 and seen.json()["user"]["nickname"] == "shared"
    assert get_user(first, user["id"]).json()["user"]["disabled_reason"] == "seen by both"
    assert token_owner(second, token_hash(token)) == user["id"]


# --- who may, and bad input -----------------------------------------------------------------------------------------


def test_the_users_api_needs_the_admin_key(start_gateway: Any) -> None:
    off = start_gateway(OPENAI_KEY="sk-users-test-0001")
    on = start_with_admin(start_gateway)

    assert admin(off, "GET", "/users").status_code == 404
    wrong = httpx.post(on.url + "/admin/users", json={}, headers={"authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert admin(on, "GET", "/users").json()["total"] == 0, "the refused create made nobody"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b'{"type": "admin"}', "type"),
        (b'{"type": "temporary"}', "expires_at"),
        (b'{"quotas": {"gpt-4o": -1}}', "quotas.gpt-4o"),
        (b'{"quotas": {"gpt-4o": 1.5}}', "quotas.gpt-4o"),
        (b'{"quotas": {"gpt-9": 10}}', "quotas.gpt-9"),
        (b'{"quotas": [1]}', "quotas"),
        (b'{"refresh": {"gpt-4o": true}}', "refresh.gpt-4o"),
        (b'{"max_ips": -2}', "max_ips"),
        (b'{"nickname": 7}', "nickname"),
        (b'{"nickname": "line\\nbreak"}', "nickname"),
        (b'{"public": "yes"}', "public"),
        (b'{"expires_at": "tomorrow"}', "expires_at"),
        (b'{"token": "pg-chosen"}', "token"),
    ],
)
def test_a_bad_user_body_gets_400_naming_the_field(start_gateway: Any, body: bytes, field: str) -> None:
    gateway = start_with_admin(start_gateway)

    reply = admin(gateway, "POST", "/users", content=body, headers={"content-type": "application/json"})

    assert reply.status_code == 400, reply.text
    assert f"Invalid {field}:" in error_of(reply)
    assert admin(gateway, "GET", "/users").json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "field"),
    [("?page=0", "page"), ("?per_page=x", "per_page"), ("?sort=token", "sort"), ("?order=up", "order"),
     ("?type=root", "type"), ("?disabled=maybe", "disabled")],
)
def test_a_bad_listing_query_gets_400_naming_it(start_gateway: Any, path: str, field: str) -> None:
    gateway = start_with_admin(start_gateway)

    reply = admin(gateway, "GET", "/users" + path)

    assert reply.status_code == 400 and f"Invalid {field}:" in error_of(reply)


def test_patch_checks_the_user_as_it_would_become(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)
    uid = create_user(gateway)[0]["id"]

    to_temporary = admin(gateway, "PATCH", f"/users/{uid}", json={"type": "temporary"})
    unknown = admin(gateway, "PATCH", f"/users/{uid}", json={"token_hash": "0" * 64})

    assert to_temporary.status_code == 400 and "expires_at" in error_of(to_temporary)
    assert unknown.status_code == 400 and "token_hash" in error_of(unknown)
    assert get_user(gateway, uid).json()["user"]["type"] == "normal"


@pytest.mark.parametrize("method_path", [
    ("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/disable"), ("POST", "/enable"), ("POST", "/rotate-token"),
    ("POST", "/refresh-quota"),
])
def test_an_unknown_user_is_404_and_a_pasted_token_is_not_repeated(
    start_gateway: Any, method_path: tuple[str, str]
) -> None:
    gateway = start_with_admin(start_gateway)
    _, token = create_user(gateway)
    method, suffix = method_path

    unknown = admin(gateway, method, f"/users/0123456789abcdef{suffix}", json={})
    pasted = admin(gateway, method, f"/users/{token}{suffix}", json={})

    assert unknown.status_code == 404 and error_of(unknown) == "No user with that id."
    assert pasted.status_code == 404 and token not in pasted.text


def test_no_token_in_any_log_line(start_gateway: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = start_with_admin(start_gateway)
    user, first = create_user(gateway, nickname="quiet")
    second = admin(gateway, "POST", f"/users/{user['id']}/rotate-token").json()["token"]
    for method, path in [("GET", "/users"), ("POST", f"/users/{user['id']}/disable"),
                         ("POST", f"/users/{user['id']}/enable"), ("GET", "/users/export"),
                         ("DELETE", f"/users/{user['id']}")]:
        admin(gateway, method, path)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert user["id"] in logged, "the changes were logged"
    for secret in (first, second, token_hash(first), token_hash(second), ADMIN_KEY):
        assert secret not in logged


def test_the_openapi_document_describes_the_users_endpoints(start_gateway: Any) -> None:
    gateway = start_with_admin(start_gateway)

    paths = set(httpx.get(gateway.url + "/admin/docs/openapi.json").json()["paths"])

    assert {"/admin/users", "/admin/users/{user_id}", "/admin/users/{user_id}/disable", "/admin/users/import",
            "/admin/users/export", "/admin/users/{user_id}/rotate-token"} <= paths


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
def test_a_store_outage_answers_503_in_the_admin_dialect(
    start_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this")
    server = OwnRedis(binary, tmp_path, password="users-outage-s3cret")
    server.start()
    try:
        gateway = start_with_admin(start_gateway, REDIS_URL=server.url_for_db(4))
        uid = create_user(gateway)[0]["id"]
        server.kill()

        replies = [admin(gateway, "POST", "/users", json={}), admin(gateway, "GET", "/users"),
                   admin(gateway, "POST", f"/users/{uid}/disable", json={"reason": "x"})]

        for reply in replies:
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"]["type"] == "store_unavailable"
    finally:
        server.kill()
