"""The money of a streamed reply: its headers carry the month as it stood, its end carries the cost (an SSE comment);
a stream the client cuts is still charged for what was generated, and its reservation is released at once."""

from __future__ import annotations

import httpx
import openai
import pytest
from accounts_support import make_user, user_record
from money_support import CHAT, USERS, cost_micro, month_now, usd, worst_case_micro
from processes import wait_for

from catalog.prices import library_rates
from fake_upstream import run_mock_upstream_in_thread

STREAM = {**CHAT, "stream": True, "max_tokens": 60}


@pytest.fixture
def slow_upstream():
    handle = run_mock_upstream_in_thread(tokens_per_sec=20.0, output_tokens=60)  # three seconds of stream
    yield handle
    handle.stop()


def _comment_figures(raw: str) -> dict[str, str]:
    line = next(line for line in raw.splitlines() if line.startswith(": poolgate: cost="))
    return dict(part.split("=", 1) for part in line.removeprefix(": poolgate: ").split())


def test_a_stream_ends_with_its_cost_and_the_next_replys_headers_carry_the_month(start_gateway):
    gateway = start_gateway(**USERS)
    user_id, token = make_user(gateway)
    auth = {"authorization": f"Bearer {token}"}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=STREAM, headers=auth) as reply:
        assert reply.headers["monthlyCost"] == "0" and reply.headers["monthlyRequests"] == "0"  # as admitted
        assert "cost" not in reply.headers  # not known yet when the headers go out
        raw = "".join(reply.iter_text())
    figures = _comment_figures(raw)
    assert raw.rstrip().endswith(figures["monthlyRequests"])  # the comment is the stream's last word
    cost = int(user_record(gateway, user_id)[f"cost:{month_now()}"])
    assert float(figures["cost"]) == pytest.approx(usd(cost), abs=1e-6)
    assert figures["monthlyRequests"] == "1"
    following = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0) \
        .chat.completions.with_raw_response.create(**CHAT)
    second = cost_micro("gpt-4o-mini", following.parse().usage.model_dump())
    assert float(following.headers["monthlyCost"]) == pytest.approx(usd(cost + second), abs=1e-6)
    assert following.headers["monthlyRequests"] == "2"


def test_a_stream_the_client_cuts_is_charged_for_what_was_generated_and_frees_its_reservation(
        start_gateway, slow_upstream):
    budget = worst_case_micro(STREAM) * 3 // 2  # room for one worst case at a time
    gateway = start_gateway(**USERS, OPENAI_BASE_URL=slow_upstream.url, MONTHLY_BUDGET_USD=str(usd(budget)))
    user_id, token = make_user(gateway)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    stream = client.chat.completions.create(**STREAM)
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
            if received == 5:
                break
    stream.close()  # the client hangs up mid-stream
    assert wait_for(lambda: user_record(gateway, user_id).get(f"requests:{month_now()}") == "1")
    record = user_record(gateway, user_id)
    generated = int(record["output:gpt-4o-mini"])
    assert 5 <= generated < 60  # what was relayed before the cut, counted by poolgate
    rates = library_rates("gpt-4o-mini", "openai")
    assert int(record[f"cost:{month_now()}"]) == rates.cost_micro(int(record["input:gpt-4o-mini"]), generated) > 0
    # Its reservation went with the settlement: another worst case fits at once (not a lease TTL later).
    assert client.chat.completions.with_raw_response.create(**{**STREAM, "stream": False}).status_code == 200
