"""The admin and user pages over HTTP, on both stores: what each page shows and does (signing in: test_pages_signin.py).

The same rules are checked in a real browser in tests/test_pages_browser.py; here
each one is pinned to what a browser receives (status, cookies, headers, page).
"""

from __future__ import annotations

import json
import time

import httpx
import jwt
import openai
import pytest
from checks_support import ADMIN_KEY, admin, listed_keys, run_checks
from pages_support import csrf_of, post_form, signed_in
from processes import wait_for
from users_support import create_user, get_user, start_with_admin

SECRET = "sk-pages-secret-key-0000000000000000000000007777"
JWT_SECRET = "pages-session-secret-0123456789-abcdefghij"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


def _sdk(gateway, credential: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=credential, max_retries=0)


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


def test_a_users_email_is_set_in_the_create_and_edit_forms(start_gateway):
    """Budgets are looked up by a user's email and its @domain: the admin sets it where they make the user."""
    gateway = start_with_admin(start_gateway)
    client = signed_in(gateway)
    post_form(client, "/admin/manage/users", "/admin/manage/users", nickname="cy", email="Cy@School.example")
    user = admin(gateway, "GET", "/users").json()["users"][0]
    assert user["email"] == "cy@school.example"
    page = f"/admin/manage/users/{user['id']}"
    assert 'value="cy@school.example"' in client.get(page).text

    post_form(client, page, page, nickname="cy", email="cy@uni.example", public_shown="1")
    assert get_user(gateway, user["id"]).json()["user"]["email"] == "cy@uni.example"
    bad = post_form(client, page, page, nickname="cy", email="not an email", public_shown="1")
    assert bad.status_code == 400 and "email" in bad.text
    post_form(client, page, page, nickname="cy", email="", public_shown="1")
    assert get_user(gateway, user["id"]).json()["user"]["email"] is None


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


def test_revoking_a_users_sessions_from_the_page_ends_them_in_every_process(start_gateway, store_url):
    settings = dict(GATEKEEPER="user_token,app_store", JWT_SECRET=JWT_SECRET, APP_BUNDLE_ID="org.example.chat")
    first = start_with_admin(start_gateway, **settings)
    second = start_with_admin(start_gateway, **settings) if store_url else first
    user, token = create_user(first, nickname="dee")
    session = admin(first, "POST", "/sessions", json={"user_id": user["id"]}).json()["token"]
    store_session = jwt.encode({"sub": user["id"], "iat": int(time.time()), "exp": int(time.time()) + 3600,
                                "jti": "j1", "method": "app_store", "gen": 0}, JWT_SECRET, algorithm="HS256")
    for gateway in (first, second):
        _sdk(gateway, session).chat.completions.create(**CHAT)
    client = signed_in(first)
    page = f"/admin/manage/users/{user['id']}"

    reply = post_form(client, page, page + "/revoke-sessions")

    assert reply.status_code == 303 and reply.headers["location"] == page + "?done=user-revoke-sessions"
    assert "sign-in session" in client.get(reply.headers["location"]).text
    for gateway in (first, second):
        with pytest.raises(openai.AuthenticationError):
            _sdk(gateway, session).chat.completions.create(**CHAT)
        assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, timeout=30,
                          headers={"authorization": f"Bearer {store_session}"}).status_code == 407
    _sdk(second, token).chat.completions.create(**CHAT)  # the user's own token is not a session: it still works


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


def test_prompt_filter_edits_in_the_page_take_effect_for_requests_in_every_process(start_gateway, store_url, upstream):
    settings = dict(REJECT_PHRASES="from-settings", REJECT_MESSAGE="Refused at start-up.")
    first = start_with_admin(start_gateway, **settings)
    second = start_with_admin(start_gateway, **settings) if store_url else first
    client = signed_in(first)
    page = client.get("/admin/manage/policy")
    assert "from-settings" in page.text and "Refused at start-up." in page.text

    bad = post_form(client, "/admin/manage/policy", "/admin/manage/policy/prompt-filter",
                    reject_phrases="fine\n(unclosed", reject_message="")
    saved = post_form(client, "/admin/manage/policy", "/admin/manage/policy/prompt-filter",
                      reject_phrases="forbidden\\s+word\nalpha, beta", reject_message="Not on this proxy.")

    assert bad.status_code == 400 and "Nothing was saved" in bad.text and "(unclosed" in bad.text
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/manage/policy?done=filter-saved"
    assert admin(first, "GET", "/policy/prompt-filter").json() == {
        "reject_phrases": ["forbidden\\s+word", "alpha, beta"], "reject_message": "Not on this proxy."}

    def refused(gateway, text: str) -> openai.PermissionDeniedError | None:
        try:
            _sdk(gateway, "unused").chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
        except openai.PermissionDeniedError as error:
            return error
        return None

    assert wait_for(lambda: refused(second, "say the FORBIDDEN   word") is not None, timeout=10)
    error = refused(first, "Alpha, Beta!")
    assert error is not None and error.body["message"] == "Not on this proxy."
    assert refused(second, "from-settings") is None, "the stored list replaced the settings' list"
    sent = [r["body"] for r in upstream.requests if r["path"].endswith("/chat/completions")]
    assert "from-settings" in sent[-1] and not [b for b in sent if "Alpha, Beta" in b], "refused: never sent"


def test_the_prompt_filter_api_refuses_what_is_not_a_list_of_patterns(start_gateway):
    gateway = start_with_admin(start_gateway, REJECT_MESSAGE="Default message.")

    unclosed = admin(gateway, "PUT", "/policy/prompt-filter", json={"reject_phrases": ["(unclosed"]})
    not_a_list = admin(gateway, "PUT", "/policy/prompt-filter", json={"reject_phrases": "one, two"})
    not_json = admin(gateway, "PUT", "/policy/prompt-filter", content=b"{")
    no_key = httpx.put(gateway.url + "/admin/policy/prompt-filter", json={"reject_phrases": []})
    saved = admin(gateway, "PUT", "/policy/prompt-filter", json={"reject_phrases": ["x+y"]})

    assert [r.status_code for r in (unclosed, not_a_list, not_json, no_key)] == [400, 400, 400, 401]
    assert "regular expression" in unclosed.json()["error"]["message"]
    assert saved.json() == {"reject_phrases": ["x+y"], "reject_message": "Default message."}


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
