"""Google sign-in (`GET /token?credential=`, `POST /token`, the `/login` page): a verified Google account of an
allowed domain becomes a session. Google is never called: its certificates are served from localhost."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import jwt
import openai
import pytest
from accounts_support import user_record
from cryptography.hazmat.primitives.asymmetric import rsa
from processes import wait_for
from signin_support import GOOGLE_CLIENT_ID, JWT_SECRET, FakeGoogle, fake_google

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with fake_google() as served:
        yield served


def google_env(google: FakeGoogle, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_KEY": "sk-real-openai-key-1234", "GATEKEEPER": "google", "AIPROXY_TOKEN_SECRET": JWT_SECRET,
        "GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID, "GOOGLE_CERTS_URL": google.certs_url,
        "GOOGLE_ALLOWED_DOMAINS": "school.example", "TOKEN_QUOTA_GPT_4O_MINI": "100000", **extra,
    }


def test_a_google_account_becomes_a_session_whose_calls_are_counted_on_its_user(start_gateway, upstream, google):
    gateway = start_gateway(**google_env(google))
    reply = httpx.get(gateway.url + "/token", params={"credential": google.id_token(email="Ada@School.example")})
    assert reply.status_code == 200, reply.text
    session = reply.json()
    assert session["email"] == "ada@school.example"
    claims = jwt.decode(session["token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["method"] == "google" and claims["exp"] == session["expires_at"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=session["token"], max_retries=0)
    answer = client.chat.completions.create(**CHAT)
    assert upstream.requests[-1]["headers"]["authorization"] == "Bearer sk-real-openai-key-1234"
    assert wait_for(lambda: int(user_record(gateway, claims["sub"]).get("used:gpt-4o-mini", 0))
                    == answer.usage.total_tokens)
    assert user_record(gateway, claims["sub"])["email"] == "ada@school.example"
    # POST, JSON or Google's form: the same person is the same user. Google's certificates were fetched once.
    posted = httpx.post(gateway.url + "/token", json={"credential": google.id_token(email="ada@school.example")})
    form = httpx.post(gateway.url + "/token", data={"credential": google.id_token(email="ada@school.example"),
                                                    "g_csrf_token": "x"})
    for again in (posted, form):
        assert again.status_code == 200, again.text
        assert jwt.decode(again.json()["token"], JWT_SECRET, algorithms=["HS256"])["sub"] == claims["sub"]
    assert len(google.fetches) == 1


@pytest.mark.parametrize(("overrides", "status", "says"), [
    ({"email": "eve@elsewhere.example"}, 403, "elsewhere.example may not sign in"),
    ({"email_verified": False}, 403, "not verified"),
    ({"email_verified": None}, 403, "not verified"),
    ({"aud": "someone-else.apps.googleusercontent.com"}, 401, "not valid"),
    ({"exp": 1_700_000_000, "iat": 1_699_990_000}, 401, "not valid"),
    ({"iss": "https://evil.example"}, 401, "not issued by Google"),
    ({"email": None}, 401, "no email"),
])
def test_a_google_token_that_is_not_an_allowed_verified_account_is_refused(
        start_gateway, google, overrides, status, says):
    gateway = start_gateway(**google_env(google))
    reply = httpx.get(gateway.url + "/token", params={"credential": google.id_token(**overrides)})
    assert reply.status_code == status
    assert says in reply.json()["error"]
    assert "token" not in reply.json()


def test_a_token_signed_by_another_key_or_not_a_token_is_401(start_gateway, google):
    gateway = start_gateway(**google_env(google, GOOGLE_ALLOWED_DOMAINS=""))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for credential in (google.id_token(key=stranger), "not-a-token", "a.b.c", google.id_token() + "x"):
        reply = httpx.get(gateway.url + "/token", params={"credential": credential})
        assert reply.status_code == 401, credential
    assert httpx.get(gateway.url + "/token").status_code == 400
    assert httpx.post(gateway.url + "/token", content=b"{", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert httpx.post(gateway.url + "/token", content=b"c" * 300_000).status_code == 413
    # Any domain when GOOGLE_ALLOWED_DOMAINS is empty.
    assert httpx.get(gateway.url + "/token",
                     params={"credential": google.id_token(email="bo@anywhere.example")}).status_code == 200


def test_google_sign_in_is_rate_limited_per_address(start_gateway, google):
    gateway = start_gateway(**google_env(google, SIGNIN_PER_MINUTE="2"))
    assert [httpx.get(gateway.url + "/token", params={"credential": "bad"}).status_code for _ in range(3)] == \
        [401, 401, 429]


def test_the_login_page_shows_googles_button_and_the_base_urls(start_gateway, google):
    gateway = start_gateway(**google_env(google, PUBLIC_URL="https://proxy.school.example"))
    page = httpx.get(gateway.url + "/login")
    assert page.status_code == 200
    assert f'data-client_id="{GOOGLE_CLIENT_ID}"' in page.text
    assert "https://proxy.school.example/proxy/openai" in page.text
    assert "https://proxy.school.example/proxy/anthropic" in page.text
    scripts = re.findall(r"<script[^>]*src=\"([^\"]+)\"", page.text)
    assert scripts == ["https://accounts.google.com/gsi/client"]  # the one thing loaded from elsewhere
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    off = start_gateway(OPENAI_KEY="sk-real-openai-key-1234")
    assert "Google sign-in is off" in httpx.get(off.url + "/login").text
    assert httpx.get(off.url + "/token", params={"credential": "x"}).status_code == 404


def test_a_signed_in_person_is_the_same_user_after_an_export_and_a_restore(start_gateway, upstream, google):
    """A restore must keep who signed in as whom: else a person's next sign-in makes a new user with fresh quotas."""
    env = google_env(google, ADMIN_KEY="admin-key-for-restore-1234")
    admin = {"authorization": "Bearer admin-key-for-restore-1234"}
    first = start_gateway(**env)
    session = httpx.get(first.url + "/token", params={"credential": google.id_token(email="ada@school.example")})
    user_id = jwt.decode(session.json()["token"], JWT_SECRET, algorithms=["HS256"])["sub"]
    client = openai.OpenAI(base_url=first.url + "/v1", api_key=session.json()["token"], max_retries=0)
    client.chat.completions.create(**CHAT)
    assert wait_for(lambda: int(user_record(first, user_id).get("used:gpt-4o-mini", 0)) > 0)
    exported = httpx.get(first.url + "/admin/users/export", headers=admin)
    assert exported.status_code == 200
    shown = next(u for u in exported.json()["users"] if u["id"] == user_id)
    assert shown["email"] == "ada@school.example" and shown["signin"] == "google"

    restored = start_gateway(**env, REDIS_PREFIX=f"restored-{uuid.uuid4().hex[:8]}:")  # a new, empty store
    assert httpx.post(restored.url + "/admin/users/import", headers=admin, json=exported.json()).status_code == 200
    again = httpx.get(restored.url + "/token", params={"credential": google.id_token(email="ada@school.example")})
    assert again.status_code == 200, again.text
    assert jwt.decode(again.json()["token"], JWT_SECRET, algorithms=["HS256"])["sub"] == user_id
    assert int(user_record(restored, user_id)["used:gpt-4o-mini"]) > 0
