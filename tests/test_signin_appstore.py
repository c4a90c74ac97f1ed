"""App Store sign-in (`POST /appstore`): a live purchase of this app, signed by Apple, becomes a session.

Apple is never called: transactions are signed with a chain of our own shaped as Apple's, and the gateway
is given its root as `APPLE_ROOT_CERTS_DIR`; legacy receipts are looked up on a fake App Store Server API.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import openai
import pytest
from accounts_support import user_record
from processes import wait_for
from signin_support import (
    APPLE_ID,
    BUNDLE_ID,
    JWT_SECRET,
    AppleChain,
    fake_app_store_api,
    make_app_receipt,
    make_apple_chain,
)

from gateway.settings import ConfigError, Settings

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


@pytest.fixture(scope="module")
def chain() -> AppleChain:
    return make_apple_chain()


def app_store_env(chain: AppleChain, tmp_path, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_KEY": "sk-real-openai-key-1234", "GATEKEEPER": "app_store", "JWT_SECRET": JWT_SECRET,
        "APP_BUNDLE_ID": BUNDLE_ID, "APP_APPLE_ID": str(APPLE_ID), "APPLE_ROOT_CERTS_DIR": chain.write_root(tmp_path /
                                                                                                            "roots"),
        "APP_STORE_ONLINE_CHECKS": "false", "TOKEN_QUOTA_GPT_4O_MINI": "100000", **extra,
    }


def sign_in(gateway, body: str | bytes) -> httpx.Response:
    return httpx.post(gateway.url + "/appstore", content=body, headers={"content-type": "text/plain"})


def test_a_purchase_becomes_a_session_whose_calls_are_counted_on_its_user(start_gateway, upstream, chain, tmp_path):
    gateway = start_gateway(**app_store_env(chain, tmp_path))
    reply = sign_in(gateway, chain.sign(appAccountToken="5b8c3f0e-0000-4000-8000-000000000001"))
    assert reply.status_code == 200, reply.text
    session = reply.json()
    claims = jwt.decode(session["token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["method"] == "app_store" and claims["exp"] == session["expires_at"]
    assert claims["exp"] - claims["iat"] == 43200
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=session["token"], max_retries=0)
    answer = client.chat.completions.create(**CHAT)
    assert answer.choices[0].message.content
    assert upstream.requests[-1]["headers"]["authorization"] == "Bearer sk-real-openai-key-1234"
    user = claims["sub"]
    assert wait_for(lambda: int(user_record(gateway, user).get("used:gpt-4o-mini", 0))
                    == answer.usage.total_tokens)
    # The same person (appAccountToken) on a renewal is the same user: quotas follow them.
    again = sign_in(gateway, chain.sign(appAccountToken="5b8c3f0e-0000-4000-8000-000000000001",
                                        transactionId="2000000999"))
    assert jwt.decode(again.json()["token"], JWT_SECRET, algorithms=["HS256"])["sub"] == user
    # Without an appAccountToken, the original transaction id names the person.
    other = sign_in(gateway, chain.sign(appAccountToken=None, originalTransactionId="2000000555"))
    assert jwt.decode(other.json()["token"], JWT_SECRET, algorithms=["HS256"])["sub"] != user


def test_concurrent_first_sign_ins_of_one_person_make_one_user(start_gateway, store_url, chain, tmp_path):
    env = app_store_env(chain, tmp_path, SIGNIN_PER_MINUTE="0")
    gateways = [start_gateway(**env), start_gateway(**env)] if store_url else [start_gateway(**env)]
    person = "5b8c3f0e-0000-4000-8000-000000000077"
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda n: sign_in(gateways[n % len(gateways)], chain.sign(appAccountToken=person)),
                                range(8)))
    assert [r.status_code for r in replies] == [200] * 8
    users = {jwt.decode(r.json()["token"], JWT_SECRET, algorithms=["HS256"])["sub"] for r in replies}
    assert len(users) == 1
    # A session made through one process is good in every other.
    token = replies[0].json()["token"]
    for gateway in gateways:
        assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                          headers={"authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize(("overrides", "says"), [
    ({"bundleId": "com.someone.else"}, "another app"),
    ({"environment": "Xcode"}, "environment"),
    ({"environment": "LocalTesting"}, "environment"),
    ({"expiresDate": 1_600_000_000_000}, "expired"),
    ({"revocationDate": 1_700_000_000_000, "revocationReason": 1}, "revoked"),
])
def test_a_purchase_that_is_not_live_for_this_app_is_401(start_gateway, upstream, chain, tmp_path, overrides, says):
    gateway = start_gateway(**app_store_env(chain, tmp_path))
    reply = sign_in(gateway, chain.sign(**overrides))
    assert reply.status_code == 401
    assert says in reply.json()["error"]
    assert "token" not in reply.json()


def test_a_tampered_or_foreign_signature_is_401(start_gateway, chain, tmp_path):
    gateway = start_gateway(**app_store_env(chain, tmp_path))
    header, payload, signature = chain.sign().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["expiresDate"] += 365 * 86_400_000  # a year for free
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert sign_in(gateway, f"{header}.{forged}.{signature}").status_code == 401
    stranger = make_apple_chain()  # a perfectly good chain, of another root
    reply = sign_in(gateway, stranger.sign())
    assert reply.status_code == 401 and "not signed by Apple" in reply.json()["error"]
    no_oid = make_apple_chain(intermediate_oid=False)  # our root, but the intermediate is no Apple WWDR
    no_oid_gateway = start_gateway(**app_store_env(no_oid, tmp_path / "other"))
    assert sign_in(no_oid_gateway, no_oid.sign()).status_code == 401


def test_xcode_purchases_pass_only_when_allowed_and_the_operator_is_warned(start_gateway, chain, tmp_path, caplog):
    unsigned = jwt.encode({"bundleId": BUNDLE_ID, "environment": "Xcode", "originalTransactionId": "1",
                           "signedDate": 1, "expiresDate": 99_999_999_999_999}, "not-apple" * 4, algorithm="HS256")
    assert sign_in(start_gateway(**app_store_env(chain, tmp_path)), unsigned).status_code == 401
    assert "APP_STORE_ALLOW_XCODE" not in caplog.text
    allowing = start_gateway(**app_store_env(chain, tmp_path, APP_STORE_ALLOW_XCODE="true"))
    assert sign_in(allowing, unsigned).status_code == 200
    assert "APP_STORE_ALLOW_XCODE=true" in caplog.text and "WITHOUT any signature check" in caplog.text


def test_a_legacy_receipt_is_looked_up_on_the_app_store_server_api(start_gateway, chain, tmp_path):
    with fake_app_store_api() as api:
        api.transactions["2000000777"] = chain.sign(originalTransactionId="2000000777", appAccountToken=None)
        gateway = start_gateway(**app_store_env(
            chain, tmp_path, APP_STORE_API_URL=api.url, IAPPrivateKey=api.private_key_pem.replace("\n", "\\n"),
            IAPKeyId=api.key_id, IAPIssuerId=api.issuer_id))
        reply = sign_in(gateway, make_app_receipt("2000000777"))
        assert reply.status_code == 200, reply.text
        token = reply.json()["token"]
        assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                          headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert api.requests_seen[-1] == "/inApps/v1/transactions/2000000777"
        unknown = sign_in(gateway, make_app_receipt("2000000404"))
        assert unknown.status_code == 401 and "knows no such purchase" in unknown.json()["error"]
        # Production (404) was asked first, then sandbox, as Pico does.
        assert api.requests_seen[-2:] == ["/inApps/v1/transactions/2000000404"] * 2


def test_bad_bodies_get_a_clear_json_error_never_a_500(start_gateway, chain, tmp_path):
    gateway = start_gateway(**app_store_env(chain, tmp_path))
    too_large = sign_in(gateway, b"e" * 300_000)
    assert too_large.status_code == 413 and "larger" in too_large.json()["error"]
    no_look_up = sign_in(gateway, make_app_receipt("2000000777"))  # no IAP_* key: receipts cannot be looked up
    assert no_look_up.status_code == 401 and "send the signed transaction" in no_look_up.json()["error"]
    for body in (b"", b"not a receipt at all", "é".encode(), b"eyJhbGciOiJFUzI1NiJ9.e30.AAAA", b"eyJ.eyJ.x"):
        reply = sign_in(gateway, body)
        assert reply.status_code in (400, 401), (body, reply.status_code)
        assert isinstance(reply.json()["error"], str)


def test_sign_in_attempts_are_limited_per_address_across_processes(start_gateway, store_url, chain, tmp_path):
    env = app_store_env(chain, tmp_path, SIGNIN_PER_MINUTE="3")
    first = start_gateway(**env)
    second = start_gateway(**env) if store_url else first  # the embedded store is one process's own
    statuses = [sign_in(gateway, chain.sign()).status_code for gateway in (first, second, first)]
    assert statuses == [200, 200, 200]
    refused = sign_in(second, chain.sign())
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "Too many sign-in attempts" in refused.json()["error"]


def test_app_store_sign_in_needs_its_settings_and_apple_roots(tmp_path):
    base = {"GATEKEEPER": "app_store", "JWT_SECRET": JWT_SECRET, "APP_BUNDLE_ID": BUNDLE_ID}
    Settings.from_env(base, env_file=None)  # the shipped Apple Root CA - G3 is enough
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**base, "APPLE_ROOT_CERTS_DIR": str(tmp_path / "empty"), "JWT_SECRET": "short"},
                          env_file=None)
    assert any("holds no .cer file" in p for p in caught.value.problems)
    assert any("JWT_SECRET must be at least 32" in p for p in caught.value.problems)
    pico = Settings.from_env({"GATEKEEPER": "app_store", "JWTPrivateKey": JWT_SECRET, "appBundleId": BUNDLE_ID,
                              "appAppleId": "42", "appTeamId": "ABCDE12345", "IAPPrivateKey": "x"}, env_file=None)
    assert (pico.jwt_secret, pico.app_bundle_id, pico.app_apple_id) == (JWT_SECRET, BUNDLE_ID, 42)
