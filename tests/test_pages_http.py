"""The admin and user pages over HTTP, on both stores: sign-in, CSRF, lockout, and what each page shows.

The same rules are checked in a real browser in tests/test_pages_browser.py; here
each one is pinned to what a browser receives (status, cookies, headers, page).
"""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from checks_support import ADMIN_KEY, admin, listed_keys, run_checks
from pages_support import browser, csrf_of, log_in, post_form, signed_in
from users_support import create_user, get_user, start_with_admin

from gateway.settings import ConfigError, Settings

SECRET = "sk-pages-secret-key-0000000000000000000000007777"


def set_cookie_named(reply: httpx.Response, name: str) -> str:
    found = [c for c in reply.headers.get_list("set-cookie") if c.startswith(name + "=")]
    assert len(found) == 1, reply.headers.get_list("set-cookie")
    return found[0]


# --- signing in --------------------------------------------------------------------------------------------------


def test_logging_in_gives_an_httponly_strict_expiring_session_cookie_that_is_not_the_admin_key(start_gateway):
    gateway = start_with_admin(start_gateway, ADMIN_SESSION_TTL_SEC="3600")
    client = browser(gateway)

    assert client.get("/admin/manage/keys").headers["location"] == "/admin", "no session: sent to the login form"
    reply = log_in(client)

    assert reply.status_code == 303 and reply.headers["location"] == "/admin/manage/keys"
    cookie = set_cookie_named(reply, "poolgate_admin")
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "max-age=3600" in attributes
    assert "secure" not in attributes, "plain HTTP: a Secure cookie would never come back"
    assert ADMIN_KEY not in cookie
    page = client.get("/admin/manage/keys")
    assert page.status_code == 200 and "Add keys" in page.text
    assert ADMIN_KEY not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'nonce-" in page.headers["content-security-policy"]


def test_the_cookie_is_secure_when_a_trusted_proxy_says_the_request_came_over_https(start_gateway):
    gateway = start_with_admin(start_gateway)  # the tests' uvicorn trusts its own loopback as the proxy
    over_https = {"x-forwarded-proto": "https"}

    form = httpx.get(gateway.url + "/admin", headers=over_https)
    login_cookie = set_cookie_named(form, "poolgate_login")
    # httpx keeps Secure cookies away from http://, as it should: hand the login cookie back as a browser would.
    reply = httpx.post(gateway.url + "/admin/login", data={"csrf": csrf_of(form.text), "admin_key": ADMIN_KEY},
                       headers={**over_https, "cookie": login_cookie.split(";")[0]})

    assert reply.status_code == 303
    for cookie in (login_cookie, set_cookie_named(reply, "poolgate_admin")):
        assert "secure" in [part.strip().lower() for part in cookie.split(";")]


def test_logging_out_ends_the_session_for_the_cookie_too(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)
    cookie = client.cookies.get("poolgate_admin")

    reply = post_form(client, "/admin/manage/keys", "/admin/logout")

    assert reply.status_code == 303 and reply.headers["location"] == "/admin"
    replay = browser(gateway, cookies={"poolgate_admin": cookie})
    assert replay.get("/admin/manage/keys").headers["location"] == "/admin", "the old cookie opens nothing"


def test_a_new_admin_key_ends_the_sessions_opened_with_the_old_one(start_gateway, store_url):
    if not store_url:
        pytest.skip("sessions outlive a gateway only in Redis (the embedded store ends with its process)")
    old = start_with_admin(start_gateway)
    cookie = signed_in(old).cookies.get("poolgate_admin")
    same = start_with_admin(start_gateway)
    changed = start_with_admin(start_gateway, ADMIN_KEY="a-new-admin-key-after-a-leak-000")

    assert browser(same, cookies={"poolgate_admin": cookie}).get("/admin/manage/keys").status_code == 200
    refused = browser(changed, cookies={"poolgate_admin": cookie}).get("/admin/manage/keys")
    assert refused.headers["location"] == "/admin"


def test_a_session_lifetime_under_a_minute_is_refused_at_start_up():
    with pytest.raises(ConfigError, match="ADMIN_SESSION_TTL_SEC"):
        Settings.from_env({"ADMIN_SESSION_TTL_SEC": "5"}, env_file=None)


def test_a_wrong_admin_key_is_refused_and_counts_toward_the_api_lockout(start_gateway):
    gateway = start_with_admin(start_gateway, ADMIN_LOCKOUT_FAILURES="3", ADMIN_LOCKOUT_SEC="600")
    client = browser(gateway)

    first, second = log_in(client, "not-the-key"), log_in(client, "still-not-it")
    assert first.status_code == second.status_code == 401
    assert "not this proxy" in first.text and "poolgate_admin=" not in str(first.headers.get_list("set-cookie"))
    assert admin(gateway, "GET", "/keys", headers={"authorization": "Bearer wrong"}).status_code == 401
    locked = log_in(client)  # the right key, but this address has failed three times

    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert admin(gateway, "GET", "/keys").status_code == 429, "the API's lockout and the pages' are one"


def test_neither_the_admin_key_nor_a_mistyped_one_reaches_the_logs(start_gateway, caplog):
    gateway = start_with_admin(start_gateway)
    caplog.set_level(logging.DEBUG)

    log_in(browser(gateway), "typo-of-the-real-admin-key-9876")
    signed_in(gateway)

    assert "admin pages: wrong admin key" in caplog.text and "admin pages: signed in" in caplog.text
    assert ADMIN_KEY not in caplog.text and "typo-of-the-real-admin-key-9876" not in caplog.text


def test_the_bearer_api_keeps_working_and_does_not_open_the_pages(start_gateway):
    gateway = start_with_admin(start_gateway)

    assert admin(gateway, "GET", "/keys").status_code == 200
    reply = httpx.get(gateway.url + "/admin/manage/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert reply.status_code == 303 and reply.headers["location"] == "/admin"


def test_a_mistyped_page_address_is_a_404_page_and_no_failed_login(start_gateway):
    gateway = start_with_admin(start_gateway, ADMIN_LOCKOUT_FAILURES="2")
    client = signed_in(gateway)

    replies = [client.get("/admin/manage/no-such-page"), client.get("/admin/manage/users/0123456789abcdef"),
               client.get("/admin/manage/users/pg-looks-like-a-token")]

    for reply in replies:
        assert reply.status_code == 404 and "text/html" in reply.headers["content-type"]
    assert "pg-looks-like-a-token" not in replies[2].text
    assert admin(gateway, "GET", "/keys").status_code == 200, "no failure was counted against the address"


def test_without_an_admin_key_the_pages_do_not_exist(start_gateway):
    gateway = start_gateway(OPENAI_KEY="sk-pages-none-0001")

    for path in ("/admin", "/admin/manage/keys", "/admin/manage/users"):
        assert httpx.get(gateway.url + path).status_code == 404, path


# --- CSRF ---------------------------------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused_and_does_nothing(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)
    before = listed_keys(gateway)

    missing = client.post("/admin/manage/keys", data={"provider": "openai", "keys": SECRET})
    wrong = client.post("/admin/manage/keys", data={"provider": "openai", "keys": SECRET, "csrf": "0" * 64})
    created = client.post("/admin/manage/users", data={"nickname": "sneaky"})

    assert missing.status_code == wrong.status_code == created.status_code == 403
    assert "CSRF" in missing.text
    assert listed_keys(gateway) == before
    assert admin(gateway, "GET", "/users").json()["total"] == 0


def test_the_login_form_needs_its_own_csrf_cookie(start_gateway):
    gateway = start_with_admin(start_gateway)

    reply = browser(gateway).post("/admin/login", data={"admin_key": ADMIN_KEY, "csrf": "made-up"})

    assert reply.status_code == 403 and "poolgate_admin=" not in str(reply.headers.get_list("set-cookie"))


# --- keys -------------------------------------------------------------------------------------------------------


def test_keys_added_in_the_page_are_in_the_pool_and_shown_only_masked(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)

    reply = post_form(client, "/admin/manage/keys", "/admin/manage/keys", provider="openai",
                      keys=f"{SECRET}\n\n sk-pages-second-key-000000000000000000008888 ")

    assert reply.status_code == 200 and "Added 2 openai key(s)" in reply.text
    assert {k["key"][-4:] for k in listed_keys(gateway)} >= {"7777", "8888"}
    assert SECRET not in reply.text and SECRET not in client.get("/admin/manage/keys").text
    assert "...7777" in reply.text


def test_a_bad_key_list_is_named_by_number_and_not_repeated(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)

    reply = post_form(client, "/admin/manage/keys", "/admin/manage/keys", provider="openai",
                      keys=f"{SECRET}\nsk-with a-space-secret-123")

    assert reply.status_code == 400 and "key #2" in reply.text
    assert "a-space-secret" not in reply.text and SECRET not in reply.text


def test_disabling_enabling_and_removing_a_key_from_the_page(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)
    key_id = listed_keys(gateway)[0]["id"]

    disabled = post_form(client, "/admin/manage/keys", f"/admin/manage/keys/{key_id}/disable")
    status_after_disable = listed_keys(gateway)[0]["status"]
    post_form(client, "/admin/manage/keys", f"/admin/manage/keys/{key_id}/enable")
    status_after_enable = listed_keys(gateway)[0]["status"]
    removed = post_form(client, "/admin/manage/keys", f"/admin/manage/keys/{key_id}/remove")

    assert disabled.status_code == 303 and disabled.headers["location"] == "/admin/manage/keys?done=key-disable"
    assert (status_after_disable, status_after_enable) == ("disabled", "active")
    assert removed.status_code == 303 and listed_keys(gateway) == []


def test_rechecking_one_key_and_all_keys_from_the_pages(start_gateway, upstream):
    secret = "sk-revoked-pages-kkkk1111"
    gateway = start_gateway(OPENAI_KEY=secret, ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true")
    run_checks(gateway, lambda: listed_keys(gateway)[0]["status"] == "revoked", "the start-up check")
    client = signed_in(gateway)
    key_id = listed_keys(gateway)[0]["id"]
    upstream.revive(secret)

    one = post_form(client, "/admin/manage/keys", f"/admin/manage/keys/{key_id}/recheck")
    run_checks(gateway, lambda: listed_keys(gateway)[0]["status"] == "active", "the recheck")
    before = listed_keys(gateway)[0]["last_check"]["at_ms"]
    every = post_form(client, "/admin/manage/maintenance", "/admin/manage/maintenance/recheck-keys")

    assert one.status_code == 303 and one.headers["location"] == "/admin/manage/keys?done=key-recheck"
    assert every.status_code == 200 and "Scheduled a check of 1 key(s)" in every.text
    run_checks(gateway, lambda: listed_keys(gateway)[0]["last_check"]["at_ms"] > before, "the recheck of all")
    assert '<span class="chip active">active</span>' in client.get("/admin/manage/keys").text


def test_rechecking_with_key_checks_off_says_so(start_gateway):
    gateway = start_with_admin(start_gateway)  # the tests' gateways run with CHECK_KEYS=false
    client = signed_in(gateway)

    reply = post_form(client, "/admin/manage/maintenance", "/admin/manage/maintenance/recheck-keys")

    assert reply.status_code == 409 and "CHECK_KEYS=false" in reply.text


# --- users ------------------------------------------------------------------------------------------------------


def test_creating_a_user_shows_its_token_once_and_the_token_works(start_gateway):
    gateway = start_with_admin(start_gateway, GATEKEEPER="user_token")
    client = signed_in(gateway)

    page = post_form(client, "/admin/manage/users", "/admin/manage/users", nickname="ann", type="normal",
                     **{"quota:gpt-4o": "5000"})

    assert page.status_code == 200
    token = page.text.split('id="token" type="text" readonly value="', 1)[1].split('"', 1)[0]
    assert token.startswith("pg-")
    users = admin(gateway, "GET", "/users").json()["users"]
    assert [(u["nickname"], u["quotas"]["gpt-4o"]["limit"]) for u in users] == [("ann", 5000)]
    assert token not in client.get(f"/admin/manage/users/{users[0]['id']}").text, "shown once, never again"
    reply = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert reply.status_code == 200, reply.text


def test_a_temporary_user_gets_an_expiry_from_its_duration(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)

    missing = post_form(client, "/admin/manage/users", "/admin/manage/users", type="temporary")
    made = post_form(client, "/admin/manage/users", "/admin/manage/users", type="temporary", duration_hours="2")

    assert missing.status_code == 400 and "expires_at" in missing.text
    assert made.status_code == 200
    user = admin(gateway, "GET", "/users").json()["users"][0]
    now_ms = int(gateway.run(gateway.app.store.time())[0]) * 1000
    assert user["type"] == "temporary" and abs(user["expires_at"] - (now_ms + 7_200_000)) < 60_000


def test_editing_a_user_changes_its_quota_note_and_addresses_limit(start_gateway):
    gateway = start_with_admin(start_gateway)
    user, _token = create_user(gateway, nickname="bo", note="old")
    client = signed_in(gateway)
    page = f"/admin/manage/users/{user['id']}"

    reply = post_form(client, page, page, nickname="bo", note="", max_ips="3",
                      **{"quota:gpt-4o": "1234", "refresh:gpt-4o": "100", "public_shown": "1"})

    assert reply.status_code == 303 and reply.headers["location"] == page + "?done=user-saved"
    after = get_user(gateway, user["id"]).json()["user"]
    assert after["quotas"]["gpt-4o"]["limit"] == 1234 and after["quotas"]["gpt-4o"]["refresh"] == 100
    assert after["note"] is None and after["max_ips"] == 3
    bad = post_form(client, page, page, nickname="bo", **{"quota:gpt-4o": "-5"})
    assert bad.status_code == 400 and "Nothing was saved" in bad.text


def test_disabling_with_a_reason_enabling_and_rotating_a_users_token(start_gateway):
    gateway = start_with_admin(start_gateway)
    user, token = create_user(gateway, nickname="cy")
    client = signed_in(gateway)
    page = f"/admin/manage/users/{user['id']}"

    post_form(client, page, page + "/disable", reason="too many requests")
    disabled = get_user(gateway, user["id"]).json()["user"]
    post_form(client, page, page + "/enable")
    enabled = get_user(gateway, user["id"]).json()["user"]
    rotated = post_form(client, page, page + "/rotate-token")

    assert disabled["disabled_reason"] == "too many requests" and enabled["disabled_at"] is None
    assert rotated.status_code == 200
    new_token = rotated.text.split('id="token" type="text" readonly value="', 1)[1].split('"', 1)[0]
    assert new_token.startswith("pg-") and new_token != token
    assert token not in rotated.text


def test_users_are_listed_searched_sorted_and_paged(start_gateway):
    gateway = start_with_admin(start_gateway)
    for number in range(55):
        create_user(gateway, nickname=f"user-{number:02d}")
    create_user(gateway, nickname="zed")
    client = signed_in(gateway)

    first = client.get("/admin/manage/users?sort=nickname&order=asc")
    second = client.get("/admin/manage/users?sort=nickname&order=asc&page=2")
    search = client.get("/admin/manage/users?q=ZE")

    assert "56 user(s)" in first.text and "page 1 of 2" in first.text
    assert first.text.index(">user-00<") < first.text.index(">user-01<") and ">zed<" not in first.text
    assert ">zed<" in second.text and ">user-00<" not in second.text
    assert ">zed<" in search.text and "1 user(s)" in search.text


def test_importing_a_file_of_the_oai_reverse_proxy_users_and_exporting_them(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)
    legacy = {"users": [{"token": "legacy-token-0001", "type": "normal", "nickname": "old-friend",
                         "createdAt": 1_700_000_000_000, "promptCount": 3}]}
    page = client.get("/admin/manage/users")

    reply = client.post("/admin/manage/users/import", data={"csrf": csrf_of(page.text)},
                        files={"file": ("users.json", json.dumps(legacy).encode(), "application/json")})
    bad = client.post("/admin/manage/users/import", data={"csrf": csrf_of(page.text)},
                      files={"file": ("users.json", b"not json", "application/json")})
    exported = client.get("/admin/manage/users/export")

    assert reply.status_code == 200 and "Imported 1 user(s)" in reply.text, reply.text
    assert ">old-friend<" in reply.text
    assert bad.status_code == 400 and "not JSON" in bad.text
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert [u["nickname"] for u in exported.json()["users"]] == ["old-friend"]
    assert "legacy-token-0001" not in exported.text


# --- policy and maintenance ---------------------------------------------------------------------------------------


def test_the_blocked_lists_are_edited_in_the_page(start_gateway):
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)

    bad = post_form(client, "/admin/manage/policy", "/admin/manage/policy", ip_blacklist="not-an-address")
    saved = post_form(client, "/admin/manage/policy", "/admin/manage/policy",
                      ip_blacklist="203.0.113.0/24\n198.51.100.7", blocked_origins="reseller.example")

    assert bad.status_code == 400 and "Nothing was saved" in bad.text
    assert saved.status_code == 303
    assert admin(gateway, "GET", "/policy").json() == {
        "ip_blacklist": ["203.0.113.0/24", "198.51.100.7"], "admin_whitelist": [],
        "blocked_origins": ["reseller.example"]}
    assert "198.51.100.7" in client.get("/admin/manage/policy").text


def test_maintenance_refreshes_quotas_and_expires_temporary_users(start_gateway):
    gateway = start_with_admin(start_gateway)
    past = create_user(gateway, nickname="gone", type="temporary", expires_at=1_000)[0]
    future = create_user(gateway, nickname="here", type="temporary", expires_at=4_000_000_000_000)[0]
    client = signed_in(gateway)

    expired = post_form(client, "/admin/manage/maintenance", "/admin/manage/maintenance/expire-temporary")
    refreshed = post_form(client, "/admin/manage/maintenance", "/admin/manage/maintenance/refresh-quotas")

    assert expired.status_code == 200 and "Disabled 1 expired temporary user(s)" in expired.text
    assert get_user(gateway, past["id"]).json()["user"]["disabled_at"] is not None
    assert get_user(gateway, future["id"]).json()["user"]["disabled_at"] is None
    assert "Refreshed the quotas of 2 user(s)" in refreshed.text


# --- /user --------------------------------------------------------------------------------------------------------


def test_the_user_page_shows_only_the_posted_tokens_user(start_gateway):
    gateway = start_with_admin(start_gateway, PUBLIC_URL="https://proxy.example.org")
    ann, ann_token = create_user(gateway, nickname="ann-the-first", quotas={"gpt-4o": 1000})
    create_user(gateway, nickname="bob-the-second", quotas={"gpt-4o": 9999})

    form = httpx.get(gateway.url + "/user")
    mine = httpx.post(gateway.url + "/user", data={"token": ann_token})
    nobody = httpx.post(gateway.url + "/user", data={"token": "pg-not-a-token"})
    by_query = httpx.get(gateway.url + "/user", params={"token": ann_token})

    assert form.status_code == 200 and 'method="post" action="/user"' in form.text
    assert mine.status_code == 200
    assert "ann-the-first" in mine.text and "bob-the-second" not in mine.text and "9,999" not in mine.text
    assert '<tr data-family="gpt-4o">' in mine.text and "1,000" in mine.text
    assert "https://proxy.example.org/proxy/openai" in mine.text
    assert ann_token not in mine.text and ann["token_hint"] in mine.text
    assert nobody.status_code == 404 and "ann-the-first" not in nobody.text
    assert "ann-the-first" not in by_query.text, "a token in the address is not looked up"
    legacy = httpx.post(gateway.url + "/user/lookup", data={"token": ann_token})
    assert legacy.status_code == 200 and "ann-the-first" in legacy.text, "the OAI Reverse Proxy's address works too"


# --- two processes ------------------------------------------------------------------------------------------------


def test_a_session_opened_on_one_gateway_works_and_ends_on_another(start_gateway, store_url):
    if not store_url:
        pytest.skip("two gateway processes share a session only through Redis (the embedded store is one process)")
    first, second = start_with_admin(start_gateway), start_with_admin(start_gateway)
    client = signed_in(first)
    cookie = client.cookies.get("poolgate_admin")
    other = browser(second, cookies={"poolgate_admin": cookie})

    assert other.get("/admin/manage/users").status_code == 200
    post_form(other, "/admin/manage/keys", "/admin/logout")
    assert client.get("/admin/manage/users").headers["location"] == "/admin"


