"""Monthly budgets and the cost of each request, as a user sees them: reply headers, 429 budget_exceeded, and no
overspending by requests at once, on both stores and across two gateway processes on one Redis."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import openai
import pytest
from accounts_support import make_user, user_record
from money_support import CHAT, USERS, body_bytes, cost_micro, month_now, usd, user_with_id, worst_case_micro
from processes import wait_for
from scripted_upstream import ScriptedUpstream, json_head

COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}).encode()
COMPLETION_COST = cost_micro("gpt-4o-mini", json.loads(COMPLETION)["usage"])


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_reply_says_what_it_cost_and_the_months_spend_and_requests(start_gateway):
    gateway = start_gateway(**USERS)
    user_id, token = make_user(gateway)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    total = 0
    for n in (1, 2):
        raw = client.chat.completions.with_raw_response.create(**CHAT)
        cost = cost_micro("gpt-4o-mini", raw.parse().usage.model_dump())
        total += cost
        assert cost > 0
        assert float(raw.headers["cost"]) == pytest.approx(usd(cost), abs=1e-6)
        assert float(raw.headers["monthlyCost"]) == pytest.approx(usd(total), abs=1e-6)
        assert raw.headers["monthlyRequests"] == str(n)
    assert user_record(gateway, user_id)[f"cost:{month_now()}"] == str(total)


def test_anthropic_cache_reads_and_writes_are_each_priced_at_their_own_rate(start_gateway):
    gateway = start_gateway(**USERS)
    _, token = make_user(gateway)
    client = anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0)
    system = [{"type": "text", "text": "You are terse. " * 300, "cache_control": {"type": "ephemeral"}}]
    costs, usages = [], []
    for _ in range(2):  # written once, then read
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=16, system=system, messages=[{"role": "user", "content": "hi"}])
        usage = raw.parse().usage.model_dump()
        usages.append(usage)
        costs.append(float(raw.headers["cost"]))
    assert usages[0]["cache_creation_input_tokens"] > 0 and usages[1]["cache_read_input_tokens"] > 0
    for usage, cost in zip(usages, costs, strict=True):
        assert cost == pytest.approx(usd(cost_micro("claude-sonnet-4-5", usage, "anthropic")), abs=1e-6)
    assert costs[1] < costs[0]  # a cache read costs a tenth of input, a write a quarter more


def test_over_budget_is_429_budget_exceeded_saying_spend_budget_and_reset_in_each_dialect(start_gateway, upstream):
    gateway = start_gateway(**USERS, MONTHLY_BUDGET_USD="0.000001")  # a micro-dollar: no request fits
    _, token = make_user(gateway)
    with pytest.raises(openai.RateLimitError) as caught:
        openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0).chat.completions.create(**CHAT)
    assert caught.value.body["code"] == "budget_exceeded"
    message = caught.value.body["message"]
    assert "$0.00 spent this month of a $0.000001 budget" in message
    assert "resets at" in message and "-01 00:00 UTC" in message  # midnight on the 1st
    assert int(caught.value.response.headers["retry-after"]) > 0
    with pytest.raises(anthropic.RateLimitError) as refused:
        anthropic.Anthropic(base_url=gateway.url + "/proxy/anthropic", api_key=token, max_retries=0).messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert "Monthly budget exceeded" in refused.value.body["error"]["message"]
    assert upstream.requests == []


def test_budgets_are_looked_up_by_user_then_email_then_domain_then_everyone(start_gateway):
    small = worst_case_micro(CHAT) - 1  # just too little for one request
    big = worst_case_micro(CHAT) * 100
    budgets = {"user:u-own": usd(big), "own@school.edu": usd(small), "mail@school.edu": usd(big),
               "@school.edu": usd(small), "*": usd(big)}
    gateway = start_gateway(**USERS, BUDGETS=json.dumps(budgets), MONTHLY_BUDGET_USD=str(usd(small)))
    cases = {  # user id, email -> served?
        ("u-own", "own@school.edu"): True,  # their own budget beats their email's
        ("u-mail", "mail@school.edu"): True,  # their email's beats their domain's
        ("u-domain", "other@school.edu"): False,  # their domain's beats everyone's
        ("u-anyone", "someone@elsewhere.org"): True,  # everyone's beats the default
    }
    for (user_id, email), served in cases.items():
        token = user_with_id(gateway, user_id, email=email)
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth(token))
        assert reply.status_code == (200 if served else 429), (user_id, reply.text)


def test_the_default_budget_applies_to_users_with_no_entry_and_special_users_have_none(start_gateway):
    gateway = start_gateway(**USERS, MONTHLY_BUDGET_USD="0.000001")
    _, normal = make_user(gateway)
    special_id, special = make_user(gateway, type="special")
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {normal}"}).status_code == 429
    reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {special}"})
    assert reply.status_code == 200
    assert int(user_record(gateway, special_id)[f"cost:{month_now()}"]) > 0  # still counted, for the report


def test_a_model_with_no_price_is_refused_for_a_user_with_a_budget_and_served_to_others(start_gateway, upstream):
    gateway = start_gateway(**USERS, BUDGETS=json.dumps({"user:budgeted": 5}))
    budgeted = user_with_id(gateway, "budgeted")
    free = user_with_id(gateway, "free")
    unpriced = {**CHAT, "model": "gpt-4.1-nano-search"}
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=unpriced,
                         headers={"authorization": f"Bearer {budgeted}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_priced"
    assert "PRICES_OVERRIDE" in refused.json()["error"]["message"]
    served = httpx.post(gateway.url + "/v1/chat/completions", json=unpriced, headers=auth(free))
    assert served.status_code == 200
    assert served.headers["cost"] == "0"


def test_a_failed_request_hands_its_cost_reservation_back(start_gateway, upstream):
    gateway = start_gateway(**{**USERS, "OPENAI_KEY": "sk-fail500-key-1111"},
                            MONTHLY_BUDGET_USD=str(usd(worst_case_micro(CHAT) * 3 // 2)))  # fits one at a time
    _, token = make_user(gateway)
    for _ in range(3):  # each would be refused if an earlier one had kept its reservation
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth(token))
        assert reply.status_code == 502


def _race(gateways: list, token: str) -> list[httpx.Response]:
    """Fifty requests at once, spread over the gateways; upstream holds every admitted one until all are decided."""
    replies: list[httpx.Response] = []

    def send(i: int) -> httpx.Response:
        reply = httpx.post(gateways[i % len(gateways)].url + "/v1/chat/completions", content=body_bytes(CHAT),
                           timeout=60, headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
        replies.append(reply)
        return reply

    with ThreadPoolExecutor(50) as workers:
        futures = [workers.submit(send, i) for i in range(50)]
        assert wait_for(lambda: len(replies) + len(HELD.exchanges) == 50, timeout=60)
        HELD_RELEASE.set()
        return [f.result() for f in futures]


HELD_RELEASE = threading.Event()
HELD: ScriptedUpstream


@pytest.fixture
def held_upstream():
    global HELD
    HELD_RELEASE.clear()

    async def answer(exchange):
        await asyncio.to_thread(HELD_RELEASE.wait, 60)
        await exchange.write(json_head(200, len(COMPLETION)) + COMPLETION)

    HELD = ScriptedUpstream(answer).start()
    yield HELD
    HELD_RELEASE.set()
    HELD.stop()


def _assert_ten_served_and_spend_within_budget(results, gateway, user_id: str, budget: int) -> None:
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 10 + [429] * 40
    assert {r.json()["error"]["code"] for r in results if r.status_code == 429} == {"budget_exceeded"}
    assert len(HELD.exchanges) == 10
    spent = int(user_record(gateway, user_id)[f"cost:{month_now()}"])
    assert spent == 10 * COMPLETION_COST <= budget
    print(f"\nbudget {budget} µ$ fits 10 worst cases of {worst_case_micro(CHAT)} µ$: 10 served, 40 refused, "
          f"spent {spent} µ$")


def test_fifty_requests_at_once_never_spend_more_than_a_budget_that_fits_ten(start_gateway, held_upstream):
    budget = worst_case_micro(CHAT) * 11 - 1
    gateway = start_gateway(**USERS, OPENAI_BASE_URL=held_upstream.url, MONTHLY_BUDGET_USD=str(usd(budget)))
    user_id, token = make_user(gateway)
    results = _race([gateway], token)
    assert wait_for(lambda: user_record(gateway, user_id).get(f"requests:{month_now()}") == "10")
    _assert_ten_served_and_spend_within_budget(results, gateway, user_id, budget)


def test_two_gateway_processes_on_one_redis_never_overspend_a_budget_together(start_gateway, held_upstream,
                                                                                 store_url):
    if not store_url.startswith("redis://"):
        pytest.skip("two gateways share a budget only through Redis; the embedded store lives in one process")
    budget = worst_case_micro(CHAT) * 11 - 1
    env = dict(USERS, OPENAI_BASE_URL=held_upstream.url, MONTHLY_BUDGET_USD=str(usd(budget)))
    first, second = start_gateway(**env), start_gateway(**env)  # one prefix, one redis-server: one gateway
    user_id, token = make_user(first)
    results = _race([first, second], token)
    assert wait_for(lambda: user_record(first, user_id).get(f"requests:{month_now()}") == "10")
    _assert_ten_served_and_spend_within_budget(results, second, user_id, budget)


def test_anonymous_callers_replies_carry_their_cost_and_the_months_anonymous_use(start_gateway):
    gateway = start_gateway(OPENAI_KEY="sk-real-openai-key-1234")  # GATEKEEPER=none: nobody's budget
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything", max_retries=0)
    costs = []
    for n in (1, 2):
        raw = client.chat.completions.with_raw_response.create(**CHAT)
        costs.append(cost_micro("gpt-4o-mini", raw.parse().usage.model_dump()))
        assert float(raw.headers["cost"]) == pytest.approx(usd(costs[-1]), abs=1e-6)
        assert float(raw.headers["monthlyCost"]) == pytest.approx(usd(sum(costs)), abs=1e-6)
        assert raw.headers["monthlyRequests"] == str(n)


def test_the_admin_sets_budgets_at_run_time_and_the_next_request_obeys(start_gateway, upstream):
    gateway = start_gateway(**USERS, ADMIN_KEY="admin-key-for-budget-tests-01")
    admin = {"authorization": "Bearer admin-key-for-budget-tests-01"}
    user_id, token = make_user(gateway)
    assert httpx.patch(gateway.url + "/admin/budgets", json={"*": 1}, headers=auth(token)).status_code == 401
    changed = httpx.patch(gateway.url + "/admin/budgets", json={f"user:{user_id}": 0.000001, "*": 5}, headers=admin)
    assert changed.json() == {"budgets": {"*": 5.0, f"user:{user_id}": 0.000001}}
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth(token))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    httpx.patch(gateway.url + "/admin/budgets", json={f"user:{user_id}": None}, headers=admin)  # back to '*'
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth(token)).status_code == 200
    assert httpx.get(gateway.url + "/admin/budgets", headers=admin).json() == {"budgets": {"*": 5.0}}
    bad = httpx.patch(gateway.url + "/admin/budgets", json={"*": -1}, headers=admin)
    assert bad.status_code == 400 and "USD >= 0" in bad.json()["error"]["message"]


def test_an_admin_gives_a_user_an_email_and_its_domains_budget_applies(start_gateway):
    """AI Proxy hands tokens to emails: a user made through the admin API carries one, so @domain budgets reach it."""
    small = worst_case_micro(CHAT) - 1  # just too little for one request
    gateway = start_gateway(**USERS, ADMIN_KEY="admin-key-email-1234",
                            BUDGETS=json.dumps({"@uni.example": usd(small)}))
    admin = {"authorization": "Bearer admin-key-email-1234"}
    made = httpx.post(gateway.url + "/admin/users", json={"nickname": "bob", "email": "Bob@Uni.Example"},
                      headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["user"]["email"] == "bob@uni.example"
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth(made.json()["token"]))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"

    user_id = made.json()["user"]["id"]
    moved = httpx.patch(gateway.url + f"/admin/users/{user_id}", json={"email": "bob@elsewhere.example"},
                        headers=admin)
    assert moved.status_code == 200, moved.text
    served = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=auth(made.json()["token"]))
    assert served.status_code == 200
    for bad in ("not-an-email", "a@b@c", "@nobody", "x" * 300 + "@a.example"):
        refused_field = httpx.patch(gateway.url + f"/admin/users/{user_id}", json={"email": bad}, headers=admin)
        assert refused_field.status_code == 400, bad
        assert refused_field.json()["error"]["message"].startswith("Invalid email:"), bad


def test_a_restore_from_an_export_keeps_the_months_spend_so_the_budget_still_holds(start_gateway):
    """An operator who moves users to a new store mid-month must not hand everyone their budget again."""
    budget = worst_case_micro(CHAT) * 3 // 2  # one request fits, a second's worst case does not once one is spent
    env = dict(USERS, ADMIN_KEY="admin-key-spend-1234", MONTHLY_BUDGET_USD=str(usd(budget)))
    admin = {"authorization": "Bearer admin-key-spend-1234"}
    first = start_gateway(**env)
    token = httpx.post(first.url + "/admin/users", json={"nickname": "ann"}, headers=admin).json()["token"]
    served = httpx.post(first.url + "/v1/chat/completions", json=CHAT, headers=auth(token))
    assert served.status_code == 200, served.text
    spent = float(served.headers["monthlyCost"])
    assert spent > 0
    exported = httpx.get(first.url + "/admin/users/export", headers=admin).json()

    restored = start_gateway(**env, REDIS_PREFIX=f"restored-{uuid.uuid4().hex[:8]}:")  # a new, empty store
    assert httpx.post(restored.url + "/admin/users/import", headers=admin, json=exported).status_code == 200
    mine = httpx.get(restored.url + "/usage/me", headers=auth(token)).json()
    assert mine["cost"] == spent and mine["requests"] == 1
    again = httpx.post(restored.url + "/v1/chat/completions", json=CHAT, headers=auth(token))
    assert again.status_code == 429 and again.json()["error"]["code"] == "budget_exceeded"
