"""`GET /metrics`: what the gateway did, in Prometheus format, the same whichever process is scraped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from processes import free_port, wait_until_listening
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import render_config_reference

GOOD, LIMITED, REVOKED = "sk-good-Mt81Qa", "sk-ratelimited-Mt82Qb", "sk-revoked-Mt83Qc"
CLAUDE = "sk-ant-good-Mt84Qd"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and labels; parsing it also proves the format is valid."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def key_id(gateway, secret: str) -> str:
    return str(gateway.key_status(secret)["id"])


def test_metrics_count_requests_upstream_attempts_by_key_and_show_the_pool(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY=f"{GOOD},{LIMITED},{REVOKED}", ANTHROPIC_KEY=CLAUDE, UPSTREAM_RETRIES="0")
    for _ in range(4):
        assert httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json=CHAT).status_code == 200
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
        assert streamed.status_code == 200
        streamed.read()
    claude = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gateway.url + "/proxy/anthropic/v1/messages", json=claude).status_code == 200
    assert httpx.post(gateway.url + "/proxy/openai/v1/chat/completions", json={"model": 5}).status_code == 400

    reply = httpx.get(gateway.url + "/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    for secret in (GOOD, LIMITED, REVOKED, CLAUDE):
        assert secret not in reply.text and secret[-6:] not in reply.text
    scrape = samples(reply.text)

    requests = "poolgate_requests_total"
    assert value(scrape, requests, route="openai", endpoint="chat/completions", family="gpt-4o", status="200") == 4
    assert value(scrape, requests, route="v1", endpoint="chat/completions", family="gpt-4o", status="200") == 1
    assert value(scrape, requests, route="anthropic", endpoint="messages", family="claude-sonnet", status="200") == 1
    assert value(scrape, requests, route="openai", endpoint="", family="", status="400") == 1

    # Exactly what the fake upstream received, by key and its answer: the pool also tried the rate-limited
    # and the revoked key on the way (fewest in flight first), and met a 429 and a 401 there.
    attempts = "poolgate_upstream_attempts_total"
    received: dict[tuple[str, int], int] = {}
    for request in upstream.requests:
        if request["path"] == "/v1/chat/completions":
            received[(request["key"], request["status"])] = received.get((request["key"], request["status"]), 0) + 1
    assert received.get((LIMITED, 429)) and received.get((REVOKED, 401)), "both refusing keys were met"
    reported = {(secret, status): value(scrape, attempts, provider="openai", key_id=key_id(gateway, secret),
                                        status=str(status))
                for secret in (GOOD, LIMITED, REVOKED) for status in (200, 401, 429)}
    assert {k: v for k, v in reported.items() if v} == received

    assert value(scrape, "poolgate_keys", provider="openai", state="revoked") == 1
    assert value(scrape, "poolgate_keys", provider="openai", state="active") + value(
        scrape, "poolgate_keys", provider="openai", state="cooling_down") == 2
    assert value(scrape, "poolgate_keys", provider="anthropic", state="active") == 1
    assert value(scrape, "poolgate_leases", provider="openai") == 0, "every lease was given back"
    assert value(scrape, "poolgate_queue_wait_seconds_count", family="gpt-4o") == 5
    assert value(scrape, "poolgate_added_latency_seconds_count", route="openai") == 4
    assert value(scrape, "poolgate_added_latency_seconds_bucket", route="openai", le="+Inf") == 4

    # The store's round trip is timed on the metrics' own writes: the scrape above made one.
    again = samples(httpx.get(gateway.url + "/metrics").text)
    assert value(again, "poolgate_store_round_trip_seconds_count") >= 1


def test_metrics_need_the_status_password_when_one_is_set(start_gateway):
    gateway = start_gateway(OPENAI_KEY=GOOD, SERVICE_INFO_PASSWORD="see-metrics-Qx5")
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    assert httpx.get(gateway.url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    reply = httpx.get(gateway.url + "/metrics", headers={"Authorization": "Bearer see-metrics-Qx5"})
    assert reply.status_code == 200 and "poolgate_keys" in reply.text
    assert "see-metrics-Qx5" not in reply.text


def test_queue_length_is_the_stores_whoever_is_asked(start_gateway):
    gateway = start_gateway(OPENAI_KEY=GOOD)

    async def people_waiting(keys=None):
        return {"gpt-4o": {"in_queue": 3, "estimated_wait_sec": 4.0, "recent_waits": []}}

    gateway.app.queue_stats = people_waiting  # type: ignore[method-assign]
    scrape = samples(httpx.get(gateway.url + "/metrics").text)
    assert value(scrape, "poolgate_queue_length", family="gpt-4o") == 3


def _clean_env() -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {k: v for k, v in os.environ.items() if k not in names}


@contextlib.contextmanager
def two_gateways(redis_url: str) -> Iterator[tuple[str, str]]:
    """The fake upstream and two `poolgate serve` processes sharing one Redis, as two machines would."""
    mock_port, ports = free_port(), (free_port(), free_port())
    env = {**_clean_env(), "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}", "OPENAI_KEY": GOOD,
           "REDIS_URL": redis_url, "REDIS_PREFIX": f"metrics-{uuid.uuid4().hex[:8]}:", "CHECK_KEYS": "false",
           "BIND_ADDRESS": "127.0.0.1"}
    processes = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(mock_port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for port in ports:
            processes.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"],
                                              env={**env, "PORT": str(port)}, stderr=subprocess.DEVNULL))
        wait_until_listening(f"http://127.0.0.1:{mock_port}/_mock/requests", processes[0])
        for port, process in zip(ports, processes[1:], strict=True):
            wait_until_listening(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_every_process_reports_the_whole_deployment(redis_server):
    if redis_server is None:
        pytest.skip("redis-server is not installed here (apt-get install redis-server); CI runs this test")
    with two_gateways(redis_server) as (first, second):
        for url, count in ((first, 3), (second, 5)):
            for _ in range(count):
                assert httpx.post(url + "/v1/chat/completions", json=CHAT).status_code == 200
        labels = {"route": "v1", "endpoint": "chat/completions", "family": "gpt-4o", "status": "200"}
        # Each process adds its counts to the store every couple of seconds; wait for that, boundedly.
        deadline = time.monotonic() + 20
        seen: list[float] = []
        while time.monotonic() < deadline:
            seen = [value(samples(httpx.get(url + "/metrics").text), "poolgate_requests_total", **labels)
                    for url in (first, second)]
            if seen == [8, 8]:
                break
            time.sleep(0.2)
        assert seen == [8, 8], "either process, scraped, counts the other's requests too"


def test_the_grafana_dashboard_reads_only_metrics_the_gateway_exports(start_gateway):
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parent.parent / "deploy" / "grafana" /
                            "poolgate-dashboard.json").read_text())
    gateway = start_gateway(OPENAI_KEY=GOOD)
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT).status_code == 200
    httpx.get(gateway.url + "/metrics")  # the first scrape's store round trip is in the second
    exported = {name for name, _ in samples(httpx.get(gateway.url + "/metrics").text)}
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bpoolgate_\w+", target["expr"])}
    assert len(dashboard["panels"]) >= 10 and used
    assert used - exported == set()


def test_admissions_and_reserved_tokens_are_counted_by_family_and_outcome(start_gateway):
    from checks_support import ADMIN_KEY
    from users_support import create_user

    gateway = start_gateway(OPENAI_KEY=GOOD, ADMIN_KEY=ADMIN_KEY, GATEKEEPER="user_token")
    _, roomy = create_user(gateway, nickname="roomy")
    _, tight = create_user(gateway, nickname="tight", quotas={"gpt-4o": 5})
    chat = {**CHAT, "max_tokens": 40}
    served = httpx.post(gateway.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {roomy}"})
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {tight}"})

    text = httpx.get(gateway.url + "/metrics").text
    scrape = samples(text)

    assert (served.status_code, refused.status_code) == (200, 429)
    assert value(scrape, "poolgate_admissions_total", family="gpt-4o", outcome="admitted") == 1
    assert value(scrape, "poolgate_admissions_total", family="gpt-4o", outcome="quota") == 1
    assert value(scrape, "poolgate_reserved_tokens_total", family="gpt-4o") >= 40  # the output asked for, at least
    assert roomy not in text and tight not in text
