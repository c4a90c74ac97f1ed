"""When every key is busy, requests wait in their family's queue — fairly, across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from processes import free_port, wait_until_listening

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
# One slow key that serves one request at a time: every other request must queue.
SLOW_KEY = "sk-slow-delay400-0001"
QUEUE_ENV = {"OPENAI_KEY": SLOW_KEY, "KEY_CONCURRENCY": "1", "HEARTBEAT_INTERVAL_SEC": "0.2"}


def chat_as(gateway, who: str, timeout: float = 60, **extra) -> httpx.Response:
    """A request from identity `who` (the client address, as a trusted proxy reports it)."""
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={**CHAT, **extra},
        headers={"x-forwarded-for": who},
        timeout=timeout,
    )


def served_order(upstream) -> list[str]:
    return [r["body"] for r in upstream.requests if r["path"] == "/v1/chat/completions"]


def wait_for(condition, what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def wait_until_queued(gateway, n: int, family: str = "gpt-4o-mini") -> None:
    """Until `n` tickets are in the family's queue, as the store (shared by every gateway) holds it."""
    wait_for(lambda: gateway.run(gateway.app.queue_stats()).get(family, {}).get("in_queue") == n,
             f"never {n} in the {family} queue")


def wait_until_upstream_saw(upstream, n: int) -> None:
    wait_for(lambda: len(served_order(upstream)) >= n, f"upstream never saw {n} request(s)")


def wait_until_taken_in(gateway, upstream, n: int, family: str = "gpt-4o-mini") -> None:
    """Until `n` requests are either served (upstream saw them) or queued: the last one sent has its place."""
    def placed() -> int:
        return len(served_order(upstream)) + gateway.run(gateway.app.queue_stats()).get(family, {}).get("in_queue", 0)
    wait_for(lambda: placed() == n, f"never {n} requests served or queued")


def test_requests_wait_for_a_busy_key_instead_of_failing(start_gateway, upstream):
    gateway = start_gateway(**QUEUE_ENV, USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: chat_as(gateway, f"10.0.0.{i}"), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    waits = sorted(int(r.headers["x-queue-wait-ms"]) for r in replies)
    assert waits[0] < 200, "the first request found the key free"
    assert waits[-1] >= 3 * 350, "the last one waited for three slow requests ahead of it"
    assert max(r["status"] for r in upstream.requests) == 200, "upstream never saw more than the key allows"


def test_an_identity_that_floods_does_not_delay_anothers_request_by_more_than_a_slot(start_gateway, upstream):
    gateway = start_gateway(**QUEUE_ENV, USER_CONCURRENCY_LIMIT="20")
    flood = [threading.Thread(target=chat_as, args=(gateway, "10.0.0.1"), kwargs={"user": f"flood-{i}"})
             for i in range(8)]
    for i, t in enumerate(flood):
        t.start()
        wait_until_taken_in(gateway, upstream, i + 1)  # the flood is queued, in its own order
    lone = chat_as(gateway, "10.0.0.2", user="lone")
    for t in flood:
        t.join()
    assert lone.status_code == 200
    order = [("lone" if '"user":"lone"' in body else "flood") for body in served_order(upstream)]
    # Served at most one flood request after it arrived (the one already in service does not count).
    assert order.index("lone") <= 2, order
    assert int(lone.headers["x-queue-wait-ms"]) < 2 * 450 + 300


def test_user_concurrency_limit_caps_waiting_requests_with_a_clear_429(start_gateway, upstream):
    gateway = start_gateway(**QUEUE_ENV, USER_CONCURRENCY_LIMIT="1")
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: chat_as(gateway, "10.0.0.9"), range(4)))
    statuses = sorted(r.status_code for r in replies)
    assert 200 in statuses and 429 in statuses
    refused = next(r for r in replies if r.status_code == 429)
    assert "already have 1 request(s) waiting" in refused.json()["error"]["message"]
    assert "retry-after" in refused.headers


def test_waiting_too_long_is_a_504(start_gateway, upstream):
    gateway = start_gateway(**{**QUEUE_ENV, "OPENAI_KEY": "sk-slow-delay1500-0001"}, QUEUE_TIMEOUT_SEC="0.5",
                            USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat_as, gateway, "10.0.0.1")
        wait_until_upstream_saw(upstream, 1)  # the first is in service
        second = pool.submit(chat_as, gateway, "10.0.0.2")
        assert first.result().status_code == 200
        timed_out = second.result()
    assert timed_out.status_code == 504
    error = timed_out.json()["error"]
    assert error["code"] == "queue_timeout"
    assert error["message"] == "Waited 0 s in the gpt-4o-mini queue without a key coming free; try again later."
    assert len(served_order(upstream)) == 1, "the timed-out request never reached upstream"


def test_a_client_that_disconnects_while_queued_leaves_the_queue(start_gateway, upstream):
    gateway = start_gateway(**{**QUEUE_ENV, "OPENAI_KEY": "sk-slow-delay1500-0001"}, USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(chat_as, gateway, "10.0.0.1")
        wait_until_upstream_saw(upstream, 1)  # the first is in service
        with pytest.raises(httpx.ReadTimeout):
            chat_as(gateway, "10.0.0.2", timeout=0.4)  # gives up while queued
        wait_until_queued(gateway, 0)  # its ticket left the queue
        stats = gateway.run(gateway.app.queue_stats())
        assert stats["gpt-4o-mini"]["in_queue"] == 0
        assert first.result().status_code == 200
    time.sleep(0.3)
    assert len(served_order(upstream)) == 1, "the request whose client left was never sent upstream"
    # and the identity may queue again: its waiting count went back down
    assert chat_as(gateway, "10.0.0.2").status_code == 200


def test_a_queued_stream_gets_heartbeats_and_the_sdk_does_not_mind(start_gateway, upstream):
    gateway = start_gateway(**{**QUEUE_ENV, "OPENAI_KEY": "sk-slow-delay1000-0001"}, USER_CONCURRENCY_LIMIT="5")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(chat_as, gateway, "10.0.0.1")
        wait_until_upstream_saw(upstream, 1)  # the first is in service
        raw = []
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                          headers={"x-forwarded-for": "10.0.0.2"}, timeout=30) as reply:
            assert reply.status_code == 200
            for chunk in reply.iter_raw():
                raw.append(chunk)
        text = b"".join(raw)
        assert text.count(b": poolgate: waiting for a key") >= 2
        assert b"data: [DONE]" in text
        assert busy.result().status_code == 200
        busy = pool.submit(chat_as, gateway, "10.0.0.1")
        wait_until_upstream_saw(upstream, 3)  # the busy one is in service again
        stream = client.chat.completions.create(**CHAT, stream=True, extra_headers={"x-forwarded-for": "10.0.0.3"})
        words = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert words
        assert busy.result().status_code == 200


def test_an_error_after_a_queued_stream_began_arrives_as_an_sse_error_the_sdk_raises(start_gateway, upstream):
    gateway = start_gateway(**{**QUEUE_ENV, "OPENAI_KEY": "sk-slow-delay1500-0001"}, QUEUE_TIMEOUT_SEC="0.6",
                            USER_CONCURRENCY_LIMIT="5")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(chat_as, gateway, "10.0.0.1")
        wait_until_upstream_saw(upstream, 1)  # the first is in service
        with pytest.raises(openai.APIError) as caught:
            for _ in client.chat.completions.create(**CHAT, stream=True, extra_headers={"x-forwarded-for": "10.0.0.3"}):
                pass
        assert "queue" in str(caught.value.message)
        assert busy.result().status_code == 200


def test_two_gateways_on_one_redis_serve_everyone_in_one_fair_order(start_gateway, upstream, store_url):
    if not store_url:
        pytest.skip("the embedded store is one process's own; one queue across gateways needs REDIS_URL")
    env = {**QUEUE_ENV, "OPENAI_KEY": "sk-slow-delay250-0001", "USER_CONCURRENCY_LIMIT": "5"}
    first, second = start_gateway(**env), start_gateway(**env)
    arrivals: list[str] = []
    replies: list[httpx.Response] = []

    def send(gateway, who: str) -> None:
        arrivals.append(who)
        replies.append(chat_as(gateway, who, user=who))

    threads = []
    for i in range(8):
        gateway = first if i % 2 == 0 else second
        threads.append(threading.Thread(target=send, args=(gateway, f"10.1.0.{i}")))
        threads[-1].start()
        # The next arrives only once this one is in service or in the queue: one order, whichever gateway.
        wait_until_taken_in(first, upstream, i + 1)
    for t in threads:
        t.join()
    assert [r.status_code for r in replies] == [200] * 8, "nobody got a 429 or an error from the gateways"
    order = [body.split('"user":"')[1].split('"')[0] for body in served_order(upstream)]
    assert order == arrivals, "one global first-come order, whichever gateway holds the connection"


def test_a_killed_processs_ticket_does_not_block_the_queue(start_gateway, upstream, store_url, tmp_path):
    if not store_url:
        pytest.skip("needs REDIS_URL: the killed gateway and the survivor must share one queue")
    env = {**QUEUE_ENV, "OPENAI_KEY": "sk-slow-delay800-0001", "USER_CONCURRENCY_LIMIT": "5",
           "QUEUE_TICKET_TTL_SEC": "0.6"}
    survivor = start_gateway(**env)
    port = free_port()
    doomed = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
        env={**os.environ, **env, "REDIS_URL": store_url, "REDIS_PREFIX": survivor.app.settings.redis_prefix,
             "OPENAI_BASE_URL": upstream.url},
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", doomed)
        with ThreadPoolExecutor(3) as pool:
            busy = pool.submit(chat_as, survivor, "10.2.0.1")
            wait_until_upstream_saw(upstream, 1)  # the first is in service
            doomed_call = pool.submit(
                lambda: httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT, timeout=10)
            )
            wait_until_queued(survivor, 1)  # its ticket is now at the head of the queue
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
            with pytest.raises(httpx.HTTPError):
                doomed_call.result()
            later = chat_as(survivor, "10.2.0.3")
            assert busy.result().status_code == 200
        assert later.status_code == 200
        # it waited for the slow request in service, not for a dead ticket that would never be served
        assert int(later.headers["x-queue-wait-ms"]) < 800 + 600 + 800
    finally:
        if doomed.poll() is None:
            doomed.kill()


def test_allowed_model_families_refuses_others_with_403(start_gateway, upstream):
    gateway = start_gateway(OPENAI_KEY="sk-healthy-0001", ALLOWED_MODEL_FAMILIES="gpt-4o-mini,embeddings")
    assert chat_as(gateway, "10.3.0.1").status_code == 200
    refused = chat_as(gateway, "10.3.0.1", model="gpt-4.1-2025-04-14")
    assert refused.status_code == 403
    assert "gpt-4.1 family is not served" in refused.json()["error"]["message"] or \
        "not served" in refused.json()["error"]["message"]
    assert len(served_order(upstream)) == 1


def test_queue_stats_report_the_queue_and_recent_waits(start_gateway, upstream):
    gateway = start_gateway(**QUEUE_ENV, USER_CONCURRENCY_LIMIT="5")
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(chat_as, gateway, f"10.4.0.{i}") for i in range(3)]
        wait_until_queued(gateway, 2)
        during = gateway.run(gateway.app.queue_stats())["gpt-4o-mini"]
        for f in futures:
            assert f.result().status_code == 200
    after = gateway.run(gateway.app.queue_stats())["gpt-4o-mini"]
    assert during["in_queue"] >= 1 and during["estimated_wait_sec"] > 0
    assert after["in_queue"] == 0 and after["estimated_wait_sec"] == 0
    assert len(after["recent_waits"]) == 2 and all(w > 0.2 for _, w in after["recent_waits"])


def test_tokens_punishment_factor_lets_smaller_prompts_go_before_a_large_one(start_gateway, upstream):
    gateway = start_gateway(**QUEUE_ENV, USER_CONCURRENCY_LIMIT="5", TOKENS_PUNISHMENT_FACTOR="1")
    big = "word " * 8000  # ~10,000 tokens: ten request-slots of punishment
    with ThreadPoolExecutor(4) as pool:
        busy = pool.submit(chat_as, gateway, "10.5.0.1", user="busy")
        wait_until_upstream_saw(upstream, 1)
        large = pool.submit(chat_as, gateway, "10.5.0.2", user="large",
                            messages=[{"role": "user", "content": big}])
        wait_until_queued(gateway, 1)
        small = [pool.submit(chat_as, gateway, f"10.5.0.{3 + i}", user=f"small-{i}") for i in range(2)]
        for f in (busy, large, *small):
            assert f.result().status_code == 200
    order = [body.split('"user":"')[1].split('"')[0] for body in served_order(upstream)]
    assert order[0] == "busy" and set(order[1:3]) == {"small-0", "small-1"} and order[3] == "large", order


def test_a_spent_rate_limit_budget_holds_a_key_back_until_its_reset(store_url):
    """Pacing: a key upstream said is out of requests is not offered before the reset it gave."""
    import asyncio

    from dispatch import Dispatcher, NoKeyAvailable
    from gateway.store import open_store
    from keypool import KeyPool, PoolSchema, RateBudget, parse_keys

    async def scenario() -> tuple[str, float, bool]:
        store = open_store(store_url)
        pool = Dispatcher(KeyPool(store, PoolSchema(f"pace-{time.monotonic_ns()}:")), lease_ttl_sec=30)
        await pool.pool.register_configured(parse_keys("openai", ["sk-pace-key-0001"]))
        lease = await pool.lease_key("openai", "gpt-4o")
        spent = RateBudget(requests_remaining=0, requests_reset_in_ms=700)
        await pool.settle(lease, "gpt-4o", budget=spent)
        try:
            await pool.lease_key("openai", "gpt-4o")
            held = ("leased", 0.0)
        except NoKeyAvailable as none:
            held = (none.reason, none.retry_after_sec)
        await asyncio.sleep(0.8)
        again = await pool.lease_key("openai", "gpt-4o")
        await store.aclose()
        return held[0], held[1], bool(again.key_id)

    reason, retry_after, served_after_reset = asyncio.run(scenario())
    assert reason == "unavailable" and 0.3 < retry_after <= 0.7
    assert served_after_reset


def test_a_request_retried_after_a_429_keeps_its_place_in_line(start_gateway, upstream):
    """It got a 429 from one key, and still goes before everyone who arrived after it."""
    gateway = start_gateway(
        OPENAI_KEY="sk-ratelimited-delay300-place-0001,sk-slow-delay2000-place-0002", KEY_CONCURRENCY="1",
        USER_CONCURRENCY_LIMIT="5", MAX_KEY_ATTEMPTS="20",
    )

    def seen(user: str, key_end: str) -> list[dict]:
        return [r for r in upstream.requests if f'"user":"{user}"' in r["body"] and r["key"].endswith(key_end)]

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    with ThreadPoolExecutor(4) as pool:
        # Occupy the healthy key first: then the only free key for the next arrival is the one that 429s.
        first = pool.submit(chat_as, gateway, "10.6.0.1", user="first")
        wait_for(lambda: seen("first", "0002"), "the first request never reached the healthy key")
        if seen("first", "0001"):  # it met the rate-limited key on its way: let that key's rest (1 s) pass
            time.sleep(max(0.0, seen("first", "0001")[0]["started_at"] + 1.4 - time.time()))
        retried = pool.submit(chat_as, gateway, "10.6.0.2", user="retried")
        wait_for(lambda: seen("retried", "0001"), "the second request never met the rate-limited key")
        # Its 429 takes 300 ms to come back: the next two are in line before it rejoins.
        later = [pool.submit(chat_as, gateway, f"10.6.0.{3 + i}", user=f"later-{i}") for i in range(2)]
        for f in (first, retried, *later):
            assert f.result().status_code == 200
    served = [r["body"].split('"user":"')[1].split('"')[0] for r in upstream.requests
              if r["path"] == "/v1/chat/completions" and r["status"] == 200]
    assert served[:2] == ["first", "retried"], served


async def test_a_queued_stream_whose_client_stops_reading_is_dropped(monkeypatch):
    """Heartbeats that cannot be delivered end the wait instead of holding a place in line for ever."""
    import asyncio

    from gateway import client_link
    from queues.waiting import ClientGone

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await asyncio.Event().wait()  # the socket buffer is full: the client reads nothing

    link = client_link.ClientLink(send, None, "openai", stalled_client_sec=0.2)
    with pytest.raises(ClientGone):
        await asyncio.wait_for(link.keep_alive_while_queued(3), timeout=5)
    assert sent[0]["status"] == 200 and b"position 4" in sent[1]["body"]
