"""The usage report: every settled request becomes a record (moved from the store's stream into SQLite or
PostgreSQL, none lost when a mover dies), `GET /usage` for the admin, `GET /usage/me` for a user."""

from __future__ import annotations

import csv
import glob
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from accounts_support import make_user
from money_support import CHAT, USERS, month_now
from processes import free_port

from accounts.schema import AccountsSchema
from accounts.usage_mover import move_usage_events
from accounts.usage_store import UsageDatabase, open_usage_database

ADMIN = "admin-key-for-usage-tests-0001"


def _served(gateway: Any, token: str, model: str = "gpt-4o-mini", n: int = 1) -> list[float]:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=token, max_retries=0)
    return [float(client.chat.completions.with_raw_response.create(**{**CHAT, "model": model}).headers["cost"])
            for _ in range(n)]


def _usage(gateway: Any, **params: Any) -> httpx.Response:
    return httpx.get(gateway.url + "/usage", params=params, headers={"authorization": f"Bearer {ADMIN}"})


@pytest.fixture
def usage_gateway(start_gateway, tmp_path):
    def start(**env: str) -> Any:
        return start_gateway(**USERS, ADMIN_KEY=ADMIN, USAGE_DB_PATH=str(tmp_path / "usage.sqlite3"), **env)
    return start


def test_the_admin_report_lists_each_request_of_the_month_with_its_cost(usage_gateway):
    gateway = usage_gateway()
    alice, alice_token = make_user(gateway)
    bob, bob_token = make_user(gateway)
    alice_costs = _served(gateway, alice_token, n=2)
    bob_costs = _served(gateway, bob_token, model="gpt-4o")
    assert httpx.get(gateway.url + "/usage").status_code == 401  # admin only
    assert httpx.get(gateway.url + "/usage", headers={"authorization": f"Bearer {alice_token}"}).status_code == 401

    report = _usage(gateway).json()
    assert report["month"] == month_now()
    rows = report["rows"]
    assert [r["user"] for r in rows] == [f"user:{bob}", f"user:{alice}", f"user:{alice}"]  # newest first
    assert [r["cost"] for r in rows] == pytest.approx([*bob_costs, *alice_costs[::-1]], abs=1e-6)
    first = rows[0]
    assert first["model"] == "gpt-4o" and first["family"] == "gpt-4o" and first["status"] == 200
    assert first["input_tokens"] > 0 and first["output_tokens"] > 0 and first["estimated"] is False
    assert first["latency_ms"] >= 0 and first["queue_ms"] >= 0 and first["time"].endswith("Z")
    assert "sk-" not in _usage(gateway).text  # a key id, never a key

    by_user = {r["user"]: r for r in _usage(gateway, group_by="user", sort="cost").json()["rows"]}
    assert by_user[f"user:{alice}"]["requests"] == 2
    assert by_user[f"user:{alice}"]["cost"] == pytest.approx(sum(alice_costs), abs=1e-6)
    by_model = _usage(gateway, group_by="model", sort="requests").json()["rows"]
    assert [(r["model"], r["requests"]) for r in by_model] == [("gpt-4o-mini", 2), ("gpt-4o", 1)]
    by_day = _usage(gateway, group_by="day").json()["rows"]
    assert len(by_day) == 1 and by_day[0]["requests"] == 3

    dearest = _usage(gateway, sort="cost", limit=1).json()["rows"]
    assert dearest[0]["model"] == "gpt-4o"  # gpt-4o costs ~17x gpt-4o-mini
    assert len(_usage(gateway, skip=1, limit=1).json()["rows"]) == 1
    assert [r["user"] for r in _usage(gateway, user=alice).json()["rows"]] == [f"user:{alice}"] * 2
    assert _usage(gateway, month="2020-01").json()["rows"] == []


def test_the_report_filters_by_email_and_comes_as_csv(usage_gateway):
    gateway = usage_gateway()
    carol, carol_token = make_user(gateway, email="carol@school.edu")
    _, other = make_user(gateway)
    _served(gateway, carol_token)
    _served(gateway, other)
    reply = _usage(gateway, email="carol@school.edu", format="csv")
    assert reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert [r["user"] for r in rows] == [f"user:{carol}"]
    assert _usage(gateway, email="nobody@school.edu").status_code == 404


@pytest.mark.parametrize(("params", "named"), [
    ({"month": "2026-13"}, "month"), ({"group_by": "colour"}, "group_by"), ({"sort": "name"}, "sort"),
    ({"limit": "100000"}, "limit"), ({"skip": "-1"}, "skip"), ({"sort": "requests"}, "sort"),
])
def test_bad_report_parameters_are_a_400_naming_the_parameter(usage_gateway, params, named):
    gateway = usage_gateway()
    reply = _usage(gateway, **params)
    assert reply.status_code == 400
    assert named in reply.json()["error"]["message"]


def test_a_user_sees_their_own_month_with_their_token(usage_gateway):
    gateway = usage_gateway()
    _, token = make_user(gateway)
    _, other = make_user(gateway)
    costs = _served(gateway, token, n=2) + _served(gateway, token, model="gpt-4o")
    _served(gateway, other)
    mine = httpx.get(gateway.url + "/usage/me", headers={"authorization": f"Bearer {token}"}).json()
    assert mine["month"] == month_now() and mine["requests"] == 3
    assert mine["cost"] == pytest.approx(sum(costs), abs=1e-6)
    assert {r["model"]: r["requests"] for r in mine["by_model"]} == {"gpt-4o-mini": 2, "gpt-4o": 1}
    assert httpx.get(gateway.url + "/usage/me").status_code == 401
    assert httpx.get(gateway.url + "/usage/me", headers={"authorization": "Bearer pg-not-a-token"}).status_code == 401


class MoverKilled(Exception):
    """Stands for the process dying: nothing after this point of the move runs."""


class _DiesAfterReading(UsageDatabase):
    def __init__(self, db: UsageDatabase, *, write_first: bool) -> None:
        self.__dict__.update(db.__dict__)
        self._write_first = write_first

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self._write_first:
            super().write(rows)  # written, then killed before acknowledging
        raise MoverKilled


@pytest.mark.parametrize("write_first", [False, True], ids=["killed-before-writing", "killed-before-acknowledging"])
def test_a_mover_killed_mid_way_loses_no_event_and_writes_none_twice(usage_gateway, tmp_path, write_first):
    gateway = usage_gateway()
    _, token = make_user(gateway)
    costs = _served(gateway, token, n=3)
    events = AccountsSchema(gateway.app.settings.redis_prefix).usage_events
    db = open_usage_database(str(tmp_path / "usage.sqlite3"))
    with pytest.raises(MoverKilled):
        gateway.run(move_usage_events(gateway.app.store, events, _DiesAfterReading(db, write_first=write_first)))
    report = _usage(gateway).json()["rows"]  # the next move (the report's) picks up what the dead one left
    assert [r["cost"] for r in report] == pytest.approx(costs[::-1], abs=1e-6)
    assert gateway.run(gateway.app.store.xlen(events)) == 0  # moved, acknowledged, gone from the store


def test_records_older_than_the_retention_are_deleted(tmp_path):
    db = open_usage_database(str(tmp_path / "usage.sqlite3"))
    row = {c: 0 for c in ("input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "cost", "status",
                          "latency_ms", "queue_ms", "estimated")}
    db.write([{**row, "id": "1-0", "time_ms": 1_000, "user_id": "u", "model": "m", "family": "f", "key_id": "k"},
              {**row, "id": "2-0", "time_ms": 10**13, "user_id": "u", "model": "m", "family": "f", "key_id": "k"}])
    assert db.forget_before(10**12) == 1


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"))  # Debian's postgresql keeps them off PATH
    binaries = [shutil.which(name) or os.path.join(debian[-1] if debian else "/usr/local/bin", name)
                for name in ("initdb", "pg_ctl")]
    if not all(os.path.exists(b) for b in binaries):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (.ci/run installs postgresql)")
    initdb, pg_ctl = binaries
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # postgres refuses to run as root
    workdir = tempfile.mkdtemp(prefix="poolgate-pg-")
    os.chmod(workdir, 0o777)
    data, port = os.path.join(workdir, "data"), free_port()
    subprocess.run([*as_postgres, initdb, "-D", data, "-U", "poolgate", "--auth=trust"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([*as_postgres, pg_ctl, "-D", data, "-w", "-l", os.path.join(workdir, "log"), "-o",
                    f"-p {port} -k {workdir} -h 127.0.0.1", "start"], check=True, stdout=subprocess.DEVNULL)
    try:
        yield f"postgresql://poolgate@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", data, "-m", "immediate", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


def test_usage_records_go_to_postgresql_when_usage_database_url_is_set(usage_gateway, postgres_url):
    import psycopg

    with psycopg.connect(postgres_url) as connection:
        connection.execute("DROP TABLE IF EXISTS usage_events")
    gateway = usage_gateway(USAGE_DATABASE_URL=postgres_url)
    alice, token = make_user(gateway)
    costs = _served(gateway, token, n=2)
    rows = _usage(gateway).json()["rows"]
    assert [r["cost"] for r in rows] == pytest.approx(costs[::-1], abs=1e-6)
    assert _usage(gateway, group_by="day").json()["rows"][0]["requests"] == 2
    with psycopg.connect(postgres_url) as connection:
        stored = connection.execute("SELECT user_id, count(*) FROM usage_events GROUP BY user_id").fetchall()
    assert stored == [(f"user:{alice}", 2)]


def test_an_embedded_gateway_moves_usage_on_its_own(usage_gateway, tmp_path, monkeypatch):
    monkeypatch.setattr("accounts.usage_mover.MOVE_INTERVAL_SEC", 0.05)
    gateway = usage_gateway()
    if not gateway.app.settings.store_is_embedded:
        pytest.skip("with Redis, `poolgate worker` moves the events (the test after this one)")
    _, token = make_user(gateway)
    _served(gateway, token)
    from processes import wait_for

    db = str(tmp_path / "usage.sqlite3")
    assert wait_for(lambda: os.path.exists(db) and open_usage_database(db).report(_everything()) != [])


def _everything() -> Any:
    from accounts.usage_store import ReportQuery

    return ReportQuery(0, 2**62)


def test_poolgate_worker_moves_usage_events_into_the_database(usage_gateway, store_url, tmp_path):
    if not store_url.startswith("redis://"):
        pytest.skip("`poolgate worker` needs Redis; the embedded store's gateway moves them itself (above)")
    gateway = usage_gateway()
    _, token = make_user(gateway)
    costs = _served(gateway, token, n=2)
    db = tmp_path / "worker-usage.sqlite3"
    env = {**os.environ, "REDIS_URL": store_url, "REDIS_PREFIX": gateway.app.settings.redis_prefix,
           "USAGE_DB_PATH": str(db), "CHECK_KEYS": "false"}
    subprocess.run([sys.executable, "-m", "gateway.cli", "worker", "--burst"], env=env, cwd=tmp_path, check=True,
                   timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = open_usage_database(str(db)).report(_everything())
    assert sorted(r["cost"] for r in rows) == sorted(round(c * 1_000_000) for c in costs)


@pytest.mark.parametrize("show", [True, False], ids=["SHOW_SPEND=true", "SHOW_SPEND=false"])
def test_the_status_page_shows_the_months_spend_only_with_show_spend(usage_gateway, show):
    gateway = usage_gateway(SHOW_SPEND=str(show).lower())
    _, token = make_user(gateway)
    costs = _served(gateway, token, model="gpt-4o", n=3)
    status = httpx.get(gateway.url + "/status").json()
    html = httpx.get(gateway.url + "/").text
    if show:
        assert status["month_spend_usd"] == pytest.approx(sum(costs), abs=1e-6)
        assert f'${sum(costs):.2f}</span><span class="label">spent this month' in html
    else:
        assert "month_spend_usd" not in status and "spent this month" not in html
