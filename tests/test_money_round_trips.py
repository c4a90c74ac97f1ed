"""Budgets on, the hot path still costs two Redis round trips: the budget check and the cost reservation join
admission's script, the cost and the usage event join settlement's (counted from Redis's side of the wire)."""

from __future__ import annotations

import httpx
import pytest
from accounts_support import make_user, user_record
from money_support import CHAT, month_now
from processes import wait_for
from test_accounts_round_trips import CountingRelay


def test_a_request_with_a_monthly_budget_that_finds_a_free_key_costs_two_round_trips(start_gateway, store_url):
    if not store_url:
        pytest.skip("the embedded store has no wire: round trips exist only with Redis")
    relay = CountingRelay(int(store_url.rsplit(":", 1)[1].split("/")[0]))
    gateway = start_gateway(
        OPENAI_KEY="sk-real-openai-key-1234", GATEKEEPER="user_token", MONTHLY_BUDGET_USD="100",
        REDIS_URL=f"redis://127.0.0.1:{relay.port}/0",
    )
    user_id, token = make_user(gateway)

    def ask(n: int) -> None:
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                           headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 200
        assert reply.headers["monthlyRequests"] == str(n)  # budgeted, costed and counted
        assert wait_for(lambda: user_record(gateway, user_id)[f"requests:{month_now()}"] == str(n))

    ask(1)  # the first use of each script loads it into Redis (NOSCRIPT, then EVAL): not the steady state
    before = relay.script_bursts()
    for n in range(2, 7):
        ask(n)
    assert relay.script_bursts() - before == 2 * 5
