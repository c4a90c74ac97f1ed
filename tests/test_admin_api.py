"""The admin API for keys: who may use it, what it shows (never a secret), and what its changes do to traffic."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest
from checks_support import ADMIN_KEY, admin, key_view, listed_keys, run_checks

SECRETS = ("sk-plain-admin-aaaa1111", "sk-revoked-admin-bbbb2222", "sk-ant-plain-admin-cccc3333")
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello pool"}]}


def chat(gateway: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT, timeout=30)


def start(start_gateway: Any, **env: str) -> Any:
    values = {"OPENAI_KEY": ",".join(SECRETS[:2]), "ANTHROPIC_KEY": SECRETS[2], "ADMIN_KEY": ADMIN_KEY,
              "CHECK_KEYS": "true", **env}
    return start_gateway(**values)


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type"} <= set(body["error"]), body
    return body["error"]  # type: ignore[no-any-return]


# --- who may use it ----------------------------------------------------------------------


def test_without_admin_key_the_admin_api_answers_404(start_gateway: Any) -> None:
    gateway = start_gateway(OPENAI_KEY=SECRETS[0])

    response = admin(gateway, "GET", "/keys")

    assert response.status_code == 404
    assert "ADMIN_KEY" in error_of(response)["message"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": ADMIN_KEY}, {"authorization": f"Basic {ADMIN_KEY}"}],
)
def test_a_missing_or_wrong_admin_key_is_401(start_gateway: Any, headers: dict[str, str]) -> None:
    gateway = start(start_gateway)

    response = httpx.get(gateway.url + "/admin/keys", headers=headers)

    assert response.status_code == 401
    assert error_of(response)["type"] == "authentication_error"
    assert response.headers["www-authenticate"] == "Bearer"


def test_repeated_failures_lock_an_address_out_even_with_the_right_key(start_gateway: Any) -> None:
    gateway = start(start_gateway, ADMIN_LOCKOUT_FAILURES="3", ADMIN_LOCKOUT_SEC="60")
    attacker = {"x-forwarded-for": "203.0.113.7"}  # the test server trusts X-Forwarded-For from loopback

    failures = [admin(gateway, "GET", "/keys", headers={**attacker, "authorization": "Bearer no"}) for _ in range(3)]
    locked = admin(gateway, "GET", "/keys", headers=attacker)
    someone_else = admin(gateway, "GET", "/keys", headers={"x-forwarded-for": "198.51.100.1"})

    assert [r.status_code for r in failures] == [401, 401, 401]
    assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 60
    assert error_of(locked)["type"] == "rate_limit_error"
    assert someone_else.status_code == 200


def test_the_lockout_ends_by_itself(start_gateway: Any) -> None:
    gateway = start(start_gateway, ADMIN_LOCKOUT_FAILURES="1", ADMIN_LOCKOUT_SEC="1")
    admin(gateway, "GET", "/keys", headers={"authorization": "Bearer no"})
    assert admin(gateway, "GET", "/keys").status_code == 429

    time.sleep(1.1)

    assert admin(gateway, "GET", "/keys").status_code == 200


# --- what it shows ---------------------------------------------------------------------------


def test_listing_shows_keys_masked_with_status_families_usage_and_last_check(start_gateway: Any) -> None:
    gateway = start(start_gateway)
    run_checks(gateway, lambda: all(k["last_check"] for k in listed_keys(gateway)), "start-up checks")
    assert chat(gateway).status_code == 200

    response = admin(gateway, "GET", "/keys")
    keys = {k["key"]: k for k in response.json()["keys"]}

    assert set(keys) == {"sk-...1111", "sk-...2222", "sk-...3333"}
    good, revoked = keys["sk-...1111"], keys["sk-...2222"]
    assert (good["provider"], good["status"], good["source"]) == ("openai", "active", "config")
    assert "gpt-4o-mini" in good["families"] and good["usage"]["prompts"] == 1
    assert good["last_check"]["result"].startswith("models list OK") and good["next_check_at_ms"]
    assert revoked["status"] == "revoked" and "401" in revoked["last_check"]["result"]
    assert keys["sk-...3333"]["provider"] == "anthropic"
    assert not any(secret in response.text for secret in SECRETS)


def test_openapi_document_describes_the_admin_endpoints(start_gateway: Any) -> None:
    gateway = start(start_gateway)

    schema = httpx.get(gateway.url + "/admin/docs/openapi.json").json()

    assert {"/admin/keys", "/admin/keys/{key_id}", "/admin/keys/{key_id}/recheck", "/admin/keys/recheck"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["AdminKey"]["scheme"] == "bearer"


# --- what its changes do ------------------------------------------------------------------------


def test_added_keys_are_checked_and_serve_at_once(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-revoked-only-dddd4444", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true")
    run_checks(gateway, lambda: key_view(gateway, "dddd4444")["status"] == "revoked", "start-up check")
    assert chat(gateway).status_code == 503

    added = admin(gateway, "POST", "/keys", json={"provider": "openai", "keys": ["sk-added-eeee5555"]})
    again = admin(gateway, "POST", "/keys", json={"provider": "openai", "keys": ["sk-added-eeee5555"]})

    assert added.status_code == 201 and added.json()["added"][0]["key"] == "sk-...5555"
    assert added.json()["added"][0]["source"] == "admin" and added.json()["check"] == "scheduled"
    assert again.json()["added"] == [] and again.json()["already_present"][0]["key"] == "sk-...5555"
    assert "sk-added-eeee5555" not in added.text + again.text
    assert chat(gateway).status_code == 200
    run_checks(gateway, lambda: key_view(gateway, "eeee5555")["last_check"], "the new key's check")


def test_a_change_made_through_one_gateway_is_seen_by_another_at_once(
    start_gateway: Any, upstream: Any, store_url: str
) -> None:
    if not store_url:
        pytest.skip("the embedded store belongs to one process")
    first = start_gateway(OPENAI_KEY="sk-revoked-shared-ffff6666", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="false")
    second = start_gateway(OPENAI_KEY="sk-revoked-shared-ffff6666", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="false")

    admin(first, "POST", "/keys", json={"provider": "openai", "keys": ["sk-shared-gggg7777"]})

    assert "sk-...7777" in [k["key"] for k in listed_keys(second)]
    upstream.reset()
    assert chat(second).status_code == 200
    assert upstream.requests[-1]["key"] == "sk-shared-gggg7777"


def test_disabled_keys_get_no_traffic_until_enabled(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-one-hhhh8888,sk-two-iiii9999", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="false")
    kid = key_view(gateway, "hhhh8888")["id"]

    disabled = admin(gateway, "POST", f"/keys/{kid}/disable")
    upstream.reset()
    served = [chat(gateway).status_code for _ in range(4)]
    sent_with = {r["key"] for r in upstream.requests}
    enabled = admin(gateway, "POST", f"/keys/{kid}/enable")
    upstream.reset()
    [chat(gateway) for _ in range(4)]

    assert disabled.json()["key"]["status"] == "disabled" and served == [200] * 4
    assert sent_with == {"sk-two-iiii9999"}
    assert enabled.json()["key"]["status"] == "active"
    assert {r["key"] for r in upstream.requests} == {"sk-one-hhhh8888", "sk-two-iiii9999"}


def test_removed_keys_leave_the_pool(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-stay-jjjj0000,sk-go-kkkk1111", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="false")
    kid = key_view(gateway, "kkkk1111")["id"]

    removed = admin(gateway, "DELETE", f"/keys/{kid}")
    gone = admin(gateway, "DELETE", f"/keys/{kid}")
    upstream.reset()
    [chat(gateway) for _ in range(3)]

    assert removed.status_code == 200 and removed.json() == {"removed": [kid]}
    assert gone.status_code == 404 and error_of(gone)["type"] == "not_found_error"
    assert [k["key"] for k in listed_keys(gateway)] == ["sk-...0000"]
    assert {r["key"] for r in upstream.requests} == {"sk-stay-jjjj0000"}


def test_recheck_one_or_all_keys(start_gateway: Any, upstream: Any) -> None:
    gateway = start(start_gateway)
    run_checks(gateway, lambda: all(k["last_check"] for k in listed_keys(gateway)), "start-up checks")
    kid = key_view(gateway, "bbbb2222")["id"]
    upstream.revive("sk-revoked-admin-bbbb2222")

    one = admin(gateway, "POST", f"/keys/{kid}/recheck")
    run_checks(gateway, lambda: key_view(gateway, "bbbb2222")["status"] == "active", "the recheck")
    before = {k["id"]: k["last_check"]["at_ms"] for k in listed_keys(gateway)}
    every = admin(gateway, "POST", "/keys/recheck")

    assert one.status_code == 202 and one.json() == {"scheduled": [kid]}
    assert every.status_code == 202 and sorted(every.json()["scheduled"]) == sorted(before)
    run_checks(
        gateway, lambda: all(k["last_check"]["at_ms"] > before[k["id"]] for k in listed_keys(gateway)), "all rechecked"
    )


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/keys", b"not json", 400),
        ("POST", "/keys", b"[]", 400),
        ("POST", "/keys", b'{"provider": "openai"}', 400),
        ("POST", "/keys", b'{"provider": "openai", "keys": "sk-x"}', 400),
        ("POST", "/keys", b'{"provider": "openai", "keys": []}', 400),
        ("POST", "/keys", b'{"provider": "google", "keys": ["sk-x"]}', 400),
        ("POST", "/keys", b'{"provider": "openai", "keys": ["sk-has space"]}', 400),
        ("POST", "/keys", b'{"provider": "openai", "keys": [7]}', 400),
        ("GET", "/keys/0123456789ab", b"", 404),
        ("POST", "/keys/0123456789ab/recheck", b"", 404),
        ("POST", "/keys/0123456789ab/disable", b"", 404),
        ("GET", "/nothing-here", b"", 404),
    ],
)
def test_bad_requests_get_clear_json_errors(
    start_gateway: Any, method: str, path: str, body: bytes, status: int
) -> None:
    gateway = start(start_gateway, CHECK_KEYS="false")

    response = admin(gateway, method, path, content=body, headers={"content-type": "application/json"})

    assert response.status_code == status
    assert error_of(response)["message"]


def test_a_secret_pasted_where_an_id_belongs_is_not_repeated(start_gateway: Any) -> None:
    gateway = start(start_gateway, CHECK_KEYS="false")

    response = admin(gateway, "DELETE", f"/keys/{SECRETS[0]}")

    assert response.status_code == 404 and SECRETS[0] not in response.text


# --- no secret anywhere ---------------------------------------------------------------------------------


def test_no_secret_in_any_admin_response_or_log_line(
    start_gateway: Any, upstream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    added_secret = "sk-orgs2-added-llll2222"
    gateway = start(start_gateway, KEY_RECHECK_BACKOFF_SEC="0.2,60")
    responses = [admin(gateway, "POST", "/keys", json={"provider": "openai", "keys": [added_secret]})]
    worker_logs: list[str] = []  # with Redis, checks run (and log) in `poolgate worker`
    run_checks(
        gateway, lambda: len([k for k in listed_keys(gateway) if k["last_check"]]) == 5, "all checks", worker_logs
    )
    kid = key_view(gateway, "llll2222", organization=None)["id"]
    responses += [chat(gateway), chat(gateway)]
    for method, path in [
        ("GET", "/keys"), ("GET", f"/keys/{kid}"), ("POST", f"/keys/{kid}/disable"), ("POST", f"/keys/{kid}/enable"),
        ("POST", f"/keys/{kid}/recheck"), ("POST", "/keys/recheck"), ("DELETE", f"/keys/{kid}"), ("GET", "/keys"),
    ]:
        responses.append(admin(gateway, method, path))
    responses.append(admin(gateway, "GET", "/keys", headers={"authorization": f"Bearer {SECRETS[0]}"}))

    shown = "\n".join(r.text + str(r.headers) for r in responses)
    logged = "\n".join([*(record.getMessage() for record in caplog.records), *worker_logs])
    assert "revived" in logged or "revoked" in logged  # the checks did log
    for secret in (*SECRETS, added_secret, ADMIN_KEY):
        assert secret not in shown
        assert secret not in logged
