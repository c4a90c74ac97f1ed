"""Session tokens: accepted wherever a credential goes, refused when forged, expired or revoked; 407 for App Store
clients (they sign in again), 401 for everyone else, in the route's dialect; admin-made sessions."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import anthropic
import httpx
import jwt
import openai
import pytest
from accounts_support import make_user
from signin_support import BUNDLE_ID, GOOGLE_CLIENT_ID, JWT_SECRET, make_apple_chain

from accounts import sessions

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
MESSAGE = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
ADMIN = {"authorization": "Bearer admin-key-for-tests"}


def env(gatekeeper: str, tmp_path, **extra: str) -> dict[str, str]:
    chain_dir = tmp_path / "roots"
    if not chain_dir.exists():
        make_apple_chain().write_root(chain_dir)
    return {"OPENAI_KEY": "sk-real-openai-key-1234", "ANTHROPIC_KEY": "sk-ant-real-key-5678",
            "GATEKEEPER": gatekeeper, "JWT_SECRET": JWT_SECRET, "ADMIN_KEY": "admin-key-for-tests",
            "APP_BUNDLE_ID": BUNDLE_ID, "APPLE_ROOT_CERTS_DIR": str(chain_dir), "GOOGLE_CLIENT_ID": GOOGLE_CLIENT_ID,
            **extra}


def session(user_id: str, method: str, *, secret: str = JWT_SECRET, algorithm: str = "HS256",
            exp_in: float | None = 3600, generation: int = 0, **extra: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "jti": uuid.uuid4().hex, "method": method,
                                 "gen": generation, **extra}
    if exp_in is not None:
        claims["exp"] = now + exp_in
    return jwt.encode(claims, secret, algorithm=algorithm)


def call(gateway, credential: str, where: str = "bearer") -> httpx.Response:
    if where == "x-api-key":
        return httpx.post(gateway.url + "/proxy/anthropic/v1/messages", json=MESSAGE,
                          headers={"x-api-key": credential, "anthropic-version": "2023-06-01"})
    if where == "query":
        return httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, params={"key": credential})
    return httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {credential}"})


def mint(gateway, **body: object) -> httpx.Response:
    return httpx.post(gateway.url + "/admin/sessions", json=body, headers=ADMIN)


def test_a_session_is_accepted_wherever_a_credential_goes(start_gateway, upstream, tmp_path):
    gateway = start_gateway(**env("app_store,google", tmp_path))
    user_id, _ = make_user(gateway)
    token = session(user_id, "google")
    for where in ("bearer", "x-api-key", "query"):
        assert call(gateway, token, where).status_code == 200, where
    assert "key=" not in upstream.requests[-1]["path"]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with our HS256 secret
@pytest.mark.parametrize("forgery", ["alg_none", "hs512", "wrong_secret", "no_exp", "past_exp", "bad_sub"])
def test_a_forged_or_expired_session_is_401_in_each_dialect(start_gateway, upstream, tmp_path, forgery):
    gateway = start_gateway(**env("google", tmp_path))
    user_id, _ = make_user(gateway)
    token = {
        "alg_none": jwt.encode({"sub": user_id, "iat": 1, "exp": 2**40, "jti": "j", "method": "google", "gen": 0},
                               None, algorithm="none"),
        "hs512": session(user_id, "google", algorithm="HS512"),
        "wrong_secret": session(user_id, "google", secret="another-secret-of-enough-length-0123456789"),
        "no_exp": session(user_id, "google", exp_in=None),
        "past_exp": session(user_id, "google", exp_in=-5),
        "bad_sub": session("../" + user_id, "google"),
    }[forgery]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0).chat.completions.create(**CHAT)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0
                            ).messages.create(**MESSAGE)
    assert refused.value.body["type"] == "error"
    assert upstream.requests == []


def test_an_expired_app_store_session_is_407_so_the_app_signs_in_again(start_gateway, upstream, tmp_path,
                                                                      monkeypatch):
    gateway = start_gateway(**env("app_store,google", tmp_path))
    user_id, _ = make_user(gateway)
    reply = call(gateway, session(user_id, "app_store", exp_in=-5))
    assert reply.status_code == 407
    assert reply.json()["error"]["code"] == "session_expired"
    anthropic_reply = call(gateway, session(user_id, "app_store", exp_in=-5), "x-api-key")
    assert anthropic_reply.status_code == 407 and anthropic_reply.json()["type"] == "error"
    # A Google session that expired is a plain 401.
    assert call(gateway, session(user_id, "google", exp_in=-5)).status_code == 401
    # A session that was valid when first seen (and remembered) expires all the same. What decides expiry is the
    # gateway's clock against the token's `exp` (accounts/sessions.py): the test moves that clock past `exp` once
    # the session has been served, rather than sleeping a margin a loaded machine can eat.
    hour = session(user_id, "app_store", exp_in=3600)
    assert call(gateway, hour).status_code == 200
    now = time.time()
    monkeypatch.setattr(sessions, "time", SimpleNamespace(time=lambda: now + 3601))
    assert call(gateway, hour).status_code == 407


def test_revoking_a_users_sessions_ends_them_in_every_process(start_gateway, store_url, upstream, tmp_path):
    first = start_gateway(**env("app_store,google,user_token", tmp_path))
    second = start_gateway(**env("app_store,google,user_token", tmp_path)) if store_url else first
    user_id, user_token = make_user(first)
    store_session, google_session = session(user_id, "app_store"), session(user_id, "google")
    for gateway in (first, second):  # verified and remembered by both processes
        assert call(gateway, store_session).status_code == 200
        assert call(gateway, google_session).status_code == 200
    revoked = httpx.post(f"{first.url}/admin/users/{user_id}/revoke-sessions", headers=ADMIN)
    assert revoked.status_code == 200 and "token" not in revoked.json()
    for gateway in (first, second):
        assert call(gateway, store_session).status_code == 407
        assert call(gateway, google_session).status_code == 401
        assert call(gateway, google_session, "x-api-key").json()["error"]["type"] == "authentication_error"
    assert call(first, user_token).status_code == 200  # the user's own token is not a session: untouched
    # A session made after the revocation works; so does an admin-made one.
    fresh = mint(first, user_id=user_id)
    assert fresh.status_code == 201
    assert call(second, fresh.json()["token"]).status_code == 200
    assert httpx.post(f"{first.url}/admin/users/{'0' * 16}/revoke-sessions", headers=ADMIN).status_code == 404
    assert httpx.post(f"{first.url}/admin/users/{user_id}/revoke-sessions").status_code == 401
    # Deleting the user ends its sessions too.
    assert httpx.delete(f"{first.url}/admin/users/{user_id}", headers=ADMIN).status_code == 200
    assert call(second, fresh.json()["token"]).status_code == 401


def test_a_disabled_users_sessions_are_refused_until_enabled(start_gateway, upstream, tmp_path):
    gateway = start_gateway(**env("google", tmp_path))
    user_id, _ = make_user(gateway)
    token = session(user_id, "google")
    assert call(gateway, token).status_code == 200
    assert httpx.post(f"{gateway.url}/admin/users/{user_id}/disable", json={"reason": "exam week"},
                      headers=ADMIN).status_code == 200
    refused = call(gateway, token)
    assert refused.status_code == 403 and "exam week" in refused.json()["error"]["message"]
    assert httpx.post(f"{gateway.url}/admin/users/{user_id}/enable", headers=ADMIN).status_code == 200
    assert call(gateway, token).status_code == 200


def test_admins_hand_out_sessions_by_email_or_user_id(start_gateway, upstream, tmp_path):
    gateway = start_gateway(**env("user_token", tmp_path))
    by_email = mint(gateway, email="Grace@School.example", ttl_sec=600)
    assert by_email.status_code == 201, by_email.text
    made = by_email.json()
    assert made["expires_at"] - time.time() == pytest.approx(600, abs=5)
    assert jwt.decode(made["token"], JWT_SECRET, algorithms=["HS256"])["method"] == "admin"
    assert call(gateway, made["token"]).status_code == 200
    assert mint(gateway, email="grace@school.example").json()["user_id"] == made["user_id"]  # the same person
    user_id, user_token = make_user(gateway)
    assert call(gateway, user_token).status_code == 200  # user tokens keep working beside sessions
    assert call(gateway, mint(gateway, user_id=user_id).json()["token"]).status_code == 200
    for body, status in (({}, 400), ({"email": "x@y.z", "user_id": user_id}, 400), ({"email": "nope"}, 400),
                         ({"user_id": "f" * 16}, 404), ({"user_id": "sk-pasted-key"}, 404),
                         ({"email": "a@b.c", "ttl_sec": 0}, 400), ({"email": "a@b.c", "ttl_sec": "60"}, 400)):
        reply = mint(gateway, **body)
        assert reply.status_code == status, body
        assert "sk-pasted-key" not in reply.text
    assert httpx.post(gateway.url + "/admin/sessions", json={"email": "a@b.c"}).status_code == 401
    # Without JWT_SECRET there are no sessions: a session-shaped credential is just an unknown token.
    plain = start_gateway(OPENAI_KEY="sk-real-openai-key-1234", GATEKEEPER="user_token",
                          ADMIN_KEY="admin-key-for-tests")
    assert mint(plain, email="a@b.c").status_code == 400
    assert call(plain, made["token"]).status_code == 401


def test_a_session_is_accepted_only_where_its_sign_in_is_on(start_gateway, tmp_path):
    gateway = start_gateway(**env("app_store,proxy_key", tmp_path, PROXY_KEY="shared-password"))
    user_id, user_token = make_user(gateway)
    assert call(gateway, session(user_id, "app_store")).status_code == 200
    assert call(gateway, "shared-password").status_code == 200  # the proxy key still passes
    assert call(gateway, session(user_id, "google")).status_code == 401
    assert call(gateway, user_token).status_code == 401  # user tokens are not on here
    assert call(gateway, "wrong-password").status_code == 401
