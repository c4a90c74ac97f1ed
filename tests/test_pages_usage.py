"""Usage and spend in the pages over HTTP, on both stores: the admin's month by user and by model with its CSV,
and a person's own spend and budget on `/user`. Requests are made with the official SDK; the figures the
pages show are checked against the `cost` header each reply carried."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

import httpx
import openai
import pytest
from checks_support import ADMIN_KEY
from money_support import CHAT, USERS, month_now, user_with_id
from pages_support import signed_in
from users_support import create_user

from accounts.usage_store import open_usage_database


def _served(gateway: Any, token: str, model: str = "gpt-4o-mini", n: int = 1) -> float:
    """What `n` SDK requests cost, as their replies' `cost` headers say."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    return sum(float(client.chat.completions.with_raw_response.create(**{**CHAT, "model": model}).headers["cost"])
               for _ in range(n))


def _cell(page: str, row: str, column: str) -> str:
    found = re.search(rf'<tr {row}>.*?<td class="n {column}">([^<]*)</td>', page, re.S)
    assert found, f"no {column} in the row {row}"
    return found.group(1)


def _dollars(text: str) -> float:
    assert text.startswith("$"), text
    return float(text[1:].replace(",", ""))


@pytest.fixture
def money_gateways(start_gateway, store_url, tmp_path):
    """Two gateway processes on one Redis (one when embedded), sharing the usage database."""
    env = dict(USERS, ADMIN_KEY=ADMIN_KEY, USAGE_DB_PATH=str(tmp_path / "usage.sqlite3"))

    def start(**extra: str) -> tuple[Any, Any]:
        first = start_gateway(**env, **extra)
        return first, start_gateway(**env, **extra) if store_url else first
    return start


def test_the_usage_page_shows_the_month_by_user_and_by_model(money_gateways):
    first, second = money_gateways()
    ann, ann_token = create_user(first, nickname="ann-spends")
    bob, bob_token = create_user(first, nickname="bob-spends")
    ann_cost = _served(first, ann_token, n=2)
    bob_cost = _served(second, bob_token, model="gpt-4o")
    client = signed_in(first)

    page = client.get("/admin/manage/usage")
    old = client.get("/admin/manage/usage", params={"month": "2020-01"})
    bad = client.get("/admin/manage/usage", params={"month": "2026-13"})

    assert page.status_code == 200 and f"Usage and spend in {month_now()}" in page.text
    ann_row, bob_row = f'data-user="user:{ann["id"]}"', f'data-user="user:{bob["id"]}"'
    assert f'<a href="/admin/manage/users/{ann["id"]}">ann-spends</a>' in page.text
    assert (_cell(page.text, ann_row, "requests"), _cell(page.text, bob_row, "requests")) == ("2", "1")
    assert _dollars(_cell(page.text, ann_row, "cost")) == pytest.approx(ann_cost, abs=1e-6)
    assert _dollars(_cell(page.text, bob_row, "cost")) == pytest.approx(bob_cost, abs=1e-6)
    assert _cell(page.text, 'data-model="gpt-4o-mini"', "requests") == "2"
    assert _dollars(_cell(page.text, 'data-model="gpt-4o"', "cost")) == pytest.approx(bob_cost, abs=1e-6)
    chart = re.search(r'<svg class="daily-chart"[^>]*aria-label="([^"]*)"', page.text)
    assert chart and "dearest day" in chart.group(1) and "<polyline" in page.text
    assert old.status_code == 200 and "No requests this month." in old.text and "ann-spends" not in old.text
    assert 'aria-label="Nothing was spent in 2020-01"' in old.text
    assert bad.status_code == 400 and "YYYY-MM" in bad.text
    assert "sk-real-openai-key" not in page.text


def test_the_usage_csv_downloads_are_the_reports_of_the_month(money_gateways):
    first, second = money_gateways()
    carol, carol_token = create_user(first, nickname="carol")
    _, dan_token = create_user(first, nickname="dan")
    carol_cost = _served(first, carol_token) + _served(second, carol_token)
    _served(second, dan_token)
    client = signed_in(first)

    every = client.get("/admin/manage/usage/csv")
    by_user = client.get("/admin/manage/usage/csv", params={"group_by": "user"})
    bad = client.get("/admin/manage/usage/csv", params={"group_by": "colour"})
    api = httpx.get(first.url + "/usage", params={"format": "csv", "group_by": "user"},
                    headers={"authorization": f"Bearer {ADMIN_KEY}"})

    assert every.status_code == 200 and every.headers["content-type"].startswith("text/csv")
    assert f'filename="usage-{month_now()}.csv"' in every.headers["content-disposition"]
    requests = list(csv.DictReader(io.StringIO(every.text)))
    assert len(requests) == 3 and {r["model"] for r in requests} == {"gpt-4o-mini"}
    users = {r["user"]: r for r in csv.DictReader(io.StringIO(by_user.text))}
    assert users[f"user:{carol['id']}"]["requests"] == "2"
    assert float(users[f"user:{carol['id']}"]["cost"]) == pytest.approx(carol_cost, abs=1e-6)
    assert by_user.text == api.text, "the page's file is the API's report"
    assert bad.status_code == 400 and "group_by" in bad.text
    assert signed_in(first).get("/admin/manage/usage/csv").status_code == 200
    assert httpx.get(first.url + "/admin/manage/usage/csv").status_code == 303, "signed-in admins only"


def test_the_user_page_shows_that_users_spend_and_budget_only(money_gateways):
    first, second = money_gateways(BUDGETS=json.dumps({"user:00000000000000b1": 5}), MONTHLY_BUDGET_USD="2")
    ann_token = user_with_id(first, "00000000000000b1", nickname="ann-budget")
    bob_token = user_with_id(first, "00000000000000b2", nickname="bob-default")
    vip_token = user_with_id(first, "00000000000000b3", nickname="vip", type="special")
    ann_cost = _served(first, ann_token, n=2) + _served(second, ann_token, model="gpt-4o")
    bob_cost = _served(second, bob_token, n=3)

    ann = httpx.post(second.url + "/user", data={"token": ann_token})
    bob = httpx.post(first.url + "/user", data={"token": bob_token})
    vip = httpx.post(first.url + "/user", data={"token": vip_token})
    mine = httpx.get(first.url + "/usage/me", headers={"authorization": f"Bearer {ann_token}"}).json()

    spend = re.search(r'<dd id="spend">\$([0-9.,]+) in (\d{4}-\d{2}) · (\d+) requests?</dd>', ann.text)
    assert spend, ann.text
    assert float(spend.group(1)) == pytest.approx(ann_cost, abs=1e-6) and spend.group(2) == month_now()
    assert spend.group(3) == "3"
    assert re.search(r'<dd id="budget">\$5\.00 a month, \$[0-9.]+ left', ann.text)
    assert 'data-model="gpt-4o"' in ann.text and 'data-model="gpt-4o-mini"' in ann.text
    assert "bob-default" not in ann.text and f"{bob_cost:.6f}".rstrip("0") not in ann.text
    assert re.search(r'<dd id="budget">\$2\.00 a month', bob.text), "MONTHLY_BUDGET_USD for everyone else"
    assert '<dd id="budget">no budget</dd>' in vip.text and '<dd id="spend">$0.00 in' in vip.text
    assert mine["budget"] == 5 and mine["cost"] == pytest.approx(ann_cost, abs=1e-6)


def test_without_budgets_the_user_page_says_no_budget(start_gateway, tmp_path):
    gateway = start_gateway(**USERS, ADMIN_KEY=ADMIN_KEY, USAGE_DB_PATH=str(tmp_path / "usage.sqlite3"))
    _, token = create_user(gateway, nickname="eve")
    cost = _served(gateway, token)

    page = httpx.post(gateway.url + "/user", data={"token": token})

    assert '<dd id="budget">no budget</dd>' in page.text
    spend = re.search(r'<dd id="spend">(\$[0-9.,]+) in ', page.text)
    assert spend and _dollars(spend.group(1)) == pytest.approx(cost, abs=1e-6)


def test_the_csv_of_every_request_holds_more_than_one_report_page(start_gateway, tmp_path):
    path = tmp_path / "usage.sqlite3"
    gateway = start_gateway(**USERS, ADMIN_KEY=ADMIN_KEY, USAGE_DB_PATH=str(path))
    now_ms = int(gateway.run(gateway.app.store.time())[0]) * 1000
    rows = [{"id": f"{now_ms}-{n}", "time_ms": now_ms, "user_id": "user:00000000000000c1", "model": "gpt-4o-mini",
             "family": "gpt-4o-mini", "key_id": "k1", "input_tokens": 8, "output_tokens": 16, "cached_tokens": 0,
             "cache_write_tokens": 0, "cost": 11, "status": 200, "latency_ms": 5, "queue_ms": 0, "estimated": 0}
            for n in range(2_345)]  # settled earlier today, as the mover writes them; more than 2 pages of 1,000
    database = open_usage_database(str(path))
    database.write(rows)
    database.close()
    client = signed_in(gateway)

    reply = client.get("/admin/manage/usage/csv")
    page = client.get("/admin/manage/usage")

    written = list(csv.DictReader(io.StringIO(reply.text)))
    assert len(written) == 2_345 and len({r["id"] for r in written}) == 2_345
    assert _cell(page.text, 'data-model="gpt-4o-mini"', "requests") == "2,345"
