"""Signing in to the admin pages over HTTP, on both stores: the session cookie, CSRF, the lockout, logging out.

The same rules are checked in a real browser in tests/test_pages_browser.py.
"""

from __future__ import annotations

import logging

import httpx
import pytest
from checks_support import ADMIN_KEY, admin, listed_keys
from pages_support import browser, csrf_of, log_in, post_form, signed_in
from users_support import start_with_admin

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
