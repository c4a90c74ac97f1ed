"""Key health: keys are checked at start-up, on a schedule and after traffic retires them, and come back by themselves.

The check functions are exercised against the fake upstream directly; the
schedule through running gateways, once in-process (embedded store) and once as
rq jobs run by `poolgate worker --burst` (real Redis). What a test observes is
what an operator sees in the admin API and what upstream received.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import fakeredis
import httpx
import pytest
from checks_support import ADMIN_KEY, admin, key_view, listed_keys, run_burst_worker, run_checks

from fake_upstream.accounts import ORGANIZATION
from keypool.checks import OVER_QUOTA, REVOKED, UNKNOWN, VALID, check_anthropic_key, check_openai_key
from keypool.health import CheckPolicy, KeyHealth
from keypool.inventory import KeyInventory
from keypool.keys import ConfiguredKey
from keypool.schema import PoolSchema

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello pool"}]}


def chat(gateway: Any, model: str = "gpt-4o") -> httpx.Response:
    return httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json={**CHAT, "model": model}, timeout=30)


def models_requests(upstream: Any, key: str) -> list[dict[str, Any]]:
    return [r for r in upstream.requests if r["path"] == "/v1/models" and r["key"] == key]


# --- the check functions ------------------------------------------------------------


async def test_openai_check_learns_families_and_organizations(upstream: Any) -> None:
    found = await check_openai_key(upstream.url, "sk-orgs2-nogpt4-1111")

    assert found.verdict == VALID
    assert "gpt-5" in found.families and "turbo" in found.families
    assert not {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4-turbo"} & set(found.families)
    assert found.organizations[0] == ORGANIZATION and len(found.organizations) == 2
    assert [r["path"] for r in upstream.requests] == ["/v1/models", "/v1/organizations"]


async def test_openai_check_of_a_key_pinned_to_an_organization_sends_it_and_lists_no_organizations(
    upstream: Any,
) -> None:
    found = await check_openai_key(upstream.url, "sk-orgs2-2222", "org-mockextra000000000000002")

    assert found.verdict == VALID and found.organizations == ()
    assert upstream.requests[-1]["headers"]["openai-organization"] == "org-mockextra000000000000002"


async def test_anthropic_check_learns_families_and_tier(upstream: Any) -> None:
    found = await check_anthropic_key(upstream.url, "sk-ant-rpm50-noopus-3333")

    assert found.verdict == VALID
    assert found.families == ("claude-haiku", "claude-other", "claude-sonnet"), "no opus; the catch-all stays"
    assert found.tier == "tier-1"
    assert upstream.requests[-1]["headers"]["anthropic-version"]


@pytest.mark.parametrize(
    ("key", "verdict"),
    [("sk-revoked-4444", REVOKED), ("sk-noquota-5555", OVER_QUOTA), ("sk-fail500-6666", UNKNOWN),
     ("sk-forbidden-7777", UNKNOWN), ("sk-ratelimited-8888", UNKNOWN)],
)
async def test_openai_check_classifies_refusals_and_never_quotes_upstream(
    upstream: Any, key: str, verdict: str
) -> None:
    found = await check_openai_key(upstream.url, key)

    assert found.verdict == verdict
    assert key[-4:] not in found.detail


async def test_anthropic_check_classifies_revoked_and_no_credit(upstream: Any) -> None:
    assert (await check_anthropic_key(upstream.url, "sk-ant-revoked-1")).verdict == REVOKED
    assert (await check_anthropic_key(upstream.url, "sk-ant-noquota-1")).verdict == OVER_QUOTA


async def test_unreachable_upstream_is_inconclusive() -> None:
    found = await check_openai_key("http://127.0.0.1:9", "sk-plain-1", timeout_sec=2)

    assert found.verdict == UNKNOWN and "could not reach upstream" in found.detail


async def test_two_checks_of_one_key_at_once_probe_upstream_once(upstream: Any) -> None:
    store = fakeredis.FakeAsyncRedis()
    policy = CheckPolicy("t:", upstream.url, upstream.url, 3600, 3600, (60.0,))
    health = KeyHealth(store, policy)
    await KeyInventory(store, PoolSchema("t:")).add([ConfiguredKey("openai", "sk-delay200-9999")])
    kid = ConfiguredKey("openai", "sk-delay200-9999").key_id

    first, second = await asyncio.gather(health.check_key(kid), health.check_key(kid))

    assert len(first) + len(second) == 1
    assert len(models_requests(upstream, "sk-delay200-9999")) == 1


# --- when checks run, through running gateways ---------------------------------------------


def test_keys_are_checked_at_start_and_serve_only_the_families_they_reach(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-plain-aaaa,sk-nogpt4-bbbb", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true")

    run_checks(gateway, lambda: all(k["last_check"] for k in listed_keys(gateway)), "start-up checks")
    limited = key_view(gateway, "sk-nogpt4-bbbb")
    assert "gpt-4o" not in limited["families"] and "gpt-5" in limited["families"]
    assert "gpt-4o" in key_view(gateway, "sk-plain-aaaa")["families"]

    upstream.reset()
    assert [chat(gateway).status_code for _ in range(6)] == [200] * 6
    assert {r["key"] for r in upstream.requests} == {"sk-plain-aaaa"}
    assert chat(gateway, "gpt-5").status_code == 200


def test_a_key_in_two_organizations_becomes_two_pool_entries(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-orgs2-cccc", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true")

    entries = run_checks(
        gateway, lambda: [k for k in listed_keys(gateway) if k["last_check"]][1:] and listed_keys(gateway),
        "both organizations' entries checked",
    )
    assert sorted(str(k["organization"]) for k in entries) == ["None", "org-mockextra000000000000002"]
    split = next(k for k in entries if k["organization"])
    assert split["split_from"] == next(k["id"] for k in entries if not k["organization"])

    upstream.reset()
    assert [chat(gateway).status_code for _ in range(4)] == [200] * 4
    sent_orgs = {r["headers"].get("openai-organization") for r in upstream.requests}
    assert sent_orgs == {None, "org-mockextra000000000000002"}


def test_a_revoked_key_that_becomes_valid_again_is_revived_by_its_recheck(
    start_gateway: Any, upstream: Any
) -> None:
    secret = "sk-revoked-dddd"
    gateway = start_gateway(
        OPENAI_KEY=secret, ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true", KEY_RECHECK_BACKOFF_SEC="0.3,1"
    )

    run_checks(gateway, lambda: key_view(gateway, secret)["status"] == "revoked", "the key found revoked")
    assert chat(gateway).status_code == 503
    upstream.revive(secret)
    time.sleep(1.1)  # past the backoff, whichever step the key is on

    run_checks(gateway, lambda: key_view(gateway, secret)["status"] == "active", "the key revived")
    assert chat(gateway).status_code == 200


def test_a_key_traffic_retires_is_rechecked_soon_and_then_with_backoff(start_gateway: Any, upstream: Any) -> None:
    # The key is good at start-up; its owner revokes it later, and traffic (a 401 invalid_api_key) retires it.
    secret = "sk-plain-eeee"
    gateway = start_gateway(
        OPENAI_KEY=f"{secret},sk-plain-ffff", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true",
        KEY_RECHECK_BACKOFF_SEC="1,3600",
    )
    run_checks(gateway, lambda: key_view(gateway, secret)["last_check"], "start-up checks")
    assert key_view(gateway, secret)["status"] == "active"
    upstream.revoke(secret)

    while key_view(gateway, secret)["status"] == "active":
        assert chat(gateway).status_code == 200
    retired = key_view(gateway, secret)
    assert retired["status"] == "revoked"
    assert 0 < retired["next_check_at_ms"] / 1000 - time.time() <= 1.0  # the first, short, step

    time.sleep(1.1)
    checked = run_checks(
        gateway, lambda: (k := key_view(gateway, secret))["last_check"]["at_ms"] > retired["last_check"]["at_ms"] and k,
        "the recheck",
    )
    assert checked["status"] == "revoked"  # still refused: it steps back to the next interval
    assert checked["next_check_at_ms"] - checked["last_check"]["at_ms"] == 3_600_000


def test_good_keys_are_rechecked_on_their_interval(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(
        OPENAI_KEY="sk-plain-gggg", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true", KEY_CHECK_INTERVAL_OPENAI_HOURS="0.0002"
    )

    run_checks(gateway, lambda: models_requests(upstream, "sk-plain-gggg"), "the start-up check")
    first = key_view(gateway, "sk-plain-gggg")
    assert first["next_check_at_ms"] - first["last_check"]["at_ms"] == 720  # 0.0002 h
    time.sleep(0.8)

    run_checks(gateway, lambda: len(models_requests(upstream, "sk-plain-gggg")) >= 2, "the periodic check")


def test_check_keys_false_turns_checks_off(start_gateway: Any, upstream: Any) -> None:
    gateway = start_gateway(OPENAI_KEY="sk-revoked-hhhh", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="false")

    refused = admin(gateway, "POST", "/keys/recheck")
    time.sleep(0.3)

    assert refused.status_code == 409 and "CHECK_KEYS" in refused.json()["error"]["message"]
    assert not models_requests(upstream, "sk-revoked-hhhh")
    assert key_view(gateway, "sk-revoked-hhhh")["last_check"] is None


def test_with_redis_checks_wait_as_rq_jobs_until_a_worker_runs_them(
    start_gateway: Any, upstream: Any, store_url: str
) -> None:
    if not store_url:
        pytest.skip("rq jobs need Redis; the embedded store checks in-process")
    gateway = start_gateway(OPENAI_KEY="sk-plain-iiii", ADMIN_KEY=ADMIN_KEY, CHECK_KEYS="true")
    time.sleep(0.3)
    assert key_view(gateway, "sk-plain-iiii")["last_check"] is None

    done = run_burst_worker(gateway.app.settings)

    assert key_view(gateway, "sk-plain-iiii")["last_check"]["result"].startswith("models list OK")
    assert "sk-plain-iiii" not in done.stdout + done.stderr


def test_worker_without_redis_url_says_why(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "worker", "--burst"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )

    assert done.returncode == 2 and "needs REDIS_URL" in done.stderr



def test_a_checked_key_still_serves_the_models_list_and_unknown_models(start_gateway, upstream):
    """Families learned from a key's models list narrow what it serves, never the catch-all family."""
    gateway = start_gateway(OPENAI_KEY="sk-checked-nogpt4-0001", CHECK_KEYS="true")
    run_checks(gateway, lambda: gateway.keys()[0]["families"] != ["*"], "the start-up check to assign families")
    assert httpx.get(gateway.url + "/v1/models").status_code == 200
    reply = httpx.post(gateway.url + "/v1/chat/completions",
                       # a real model no family pattern names: it falls to the catch-all family
                       json={"model": "codex-mini-latest", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200


def test_anthropic_tier_is_learned_from_real_traffic(start_gateway, upstream):
    """With checks off, a served message's rate-limit headers alone tell the key's tier."""
    import anthropic

    gateway = start_gateway(ANTHROPIC_KEY="sk-ant-rpm900-traffic-0001", ADMIN_KEY=ADMIN_KEY)
    assert key_view(gateway, "sk-ant-rpm900-traffic-0001")["tier"] is None
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key="x", max_retries=0)
    client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert key_view(gateway, "sk-ant-rpm900-traffic-0001")["tier"] == "tier-2"
