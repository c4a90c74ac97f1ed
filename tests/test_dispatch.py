"""Where a waiting ticket meets a free key: every change of a queue's head wakes the new head, on one clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from processes import free_port, wait_until_listening

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def chat(url: str, who: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={**CHAT, "user": who},
                      headers={"x-forwarded-for": who}, timeout=timeout)


def wait_for(condition, what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def store_ms(store: redis.Redis) -> int:
    sec, usec = store.time()
    return int(sec) * 1000 + int(usec) // 1000


def test_a_dead_ticket_purged_at_the_head_wakes_the_live_ticket_behind_it(start_gateway, upstream, store_url, tmp_path):
    """A gateway stops renewing its tickets at the head; once they have expired the live one behind is served at
    once — not at its own slow re-check a whole ticket TTL later — and a newcomer is served after it."""
    if not store_url:
        pytest.skip("needs REDIS_URL: the stopped gateway and the survivor must share one queue")
    ttl = 4.5  # tickets renewed every ttl / 3 = 1.5 s; a waiter behind the head re-checks every ttl
    # The key answers slowly enough that it is still busy when the stopping gateway is stopped (at most
    # ttl / 3 + 0.5 s after the live ticket joined, below); were it free before, the head would be served.
    env = {"OPENAI_KEY": "sk-slow-delay4500-0001", "KEY_CONCURRENCY": "1", "USER_CONCURRENCY_LIMIT": "5",
           "QUEUE_TICKET_TTL_SEC": str(ttl), "HEARTBEAT_INTERVAL_SEC": "30"}
    survivor = start_gateway(**env)
    prefix = survivor.app.settings.redis_prefix
    store = redis.Redis.from_url(store_url)
    queue, tickets = f"{prefix}queue:gpt-4o-mini", f"{prefix}tickets"
    port = free_port()
    stopped = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--host", "127.0.0.1"],
        env={**os.environ, **env, "REDIS_URL": store_url, "REDIS_PREFIX": prefix, "OPENAI_BASE_URL": upstream.url,
             "CHECK_KEYS": "false"},
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_listening(f"http://127.0.0.1:{port}/health", stopped)
        with ThreadPoolExecutor(5) as pool:
            busy = pool.submit(chat, survivor.url, "10.9.0.1")
            wait_for(lambda: any('"user":"10.9.0.1"' in r["body"] for r in upstream.requests),
                     "the first request never reached upstream")
            # Two tickets of the gateway about to stop hold the head, so the live ticket is third: only the
            # ticket right behind the head retries when the head would expire, the others wait to be woken (or
            # for their re-check a ticket TTL later), which is what this test watches.
            for queued, who in enumerate(("10.9.0.2", "10.9.0.5"), start=1):
                pool.submit(chat, f"http://127.0.0.1:{port}", who, 30)
                wait_for(lambda n=queued: store.zcard(queue) == n, "the stopped gateway's ticket never queued")
            dead = store.zrange(queue, 0, 1)
            live = pool.submit(chat, survivor.url, "10.9.0.3")
            wait_for(lambda: store.zcard(queue) == 3, "the live ticket never queued behind the dead ones")
            joined_expiry = store.zscore(tickets, store.zrange(queue, 2, 2)[0])
            # The live ticket re-checks a ticket TTL after joining; the dead ones must outlive that re-check, so
            # the gateway is stopped only once it renewed them half a second after the live one joined. They
            # then expire well before the live ticket's second re-check (2 * ttl after it joined).
            wait_for(lambda: min(store.zscore(tickets, t) or 0 for t in dead) >= joined_expiry + 500, "no renewal")
            stopped.send_signal(signal.SIGSTOP)  # alive but silent: its tickets are no longer renewed
            assert not busy.done(), "the key came free before the gateway stopped: its ticket took it"
            assert busy.result().status_code == 200  # the key is free now; the dead tickets still hold the head
            wait_for(lambda: max(store.zscore(tickets, t) or 0 for t in dead) < store_ms(store),
                     "the dead tickets never expired")
            newcomer = pool.submit(chat, survivor.url, "10.9.0.4")  # it purges the dead head and must wake
            served = live.result()
            assert served.status_code == 200
            assert newcomer.result().status_code == 200
            stopped.kill()  # its clients' requests end now rather than at their timeout
        # Served as soon as a newcomer purged the dead head, not at its own second re-check, which comes no
        # earlier than 2 * ttl after it joined (the dead tickets expired 1 to 2.5 s before that).
        assert int(served.headers["x-queue-wait-ms"]) / 1000 < 2 * ttl
        order = [r["body"].split('"user":"')[1].split('"')[0] for r in upstream.requests
                 if r["path"] == "/v1/chat/completions"]
        assert order == ["10.9.0.1", "10.9.0.3", "10.9.0.4"], order
    finally:
        stopped.kill()
        stopped.wait(timeout=10)
        store.close()


def test_a_gateway_whose_clock_runs_two_minutes_ahead_neither_purges_live_tickets_nor_reaps_live_leases(
    store_url, monkeypatch
):
    """Expiry is judged on the store's clock: a skewed gateway cannot take a key or a place that is still held."""
    import asyncio
    import types

    from dispatch import Dispatcher, NoKeyAvailable
    from gateway.store import open_store
    from keypool import KeyPool, PoolSchema, parse_keys
    from queues.waiting import FamilyQueues, Place

    ahead = types.SimpleNamespace(time=lambda: time.time() + 120, monotonic=time.monotonic, sleep=time.sleep)

    async def refusal(pool: Dispatcher) -> str:
        try:
            await pool.lease_key("openai", "gpt-4o")
        except NoKeyAvailable as none:
            return none.reason
        return "leased"

    async def scenario() -> tuple[str, int, str, str]:
        store = open_store(store_url)
        schema = PoolSchema(f"clock-{time.monotonic_ns()}:")
        honest = Dispatcher(KeyPool(store, schema), lease_ttl_sec=30, key_concurrency=1)
        await honest.pool.register_configured(parse_keys("openai", ["sk-clock-key-0001"]))
        held = await honest.lease_key("openai", "gpt-4o")
        line = FamilyQueues(store, honest, user_concurrency_limit=5, queue_timeout_sec=30,
                            heartbeat_interval_sec=30, tokens_punishment_factor=0, ticket_ttl_sec=15)
        await line.start()
        queued = asyncio.Event()

        async def on_wait(position: int) -> None:
            queued.set()  # told its place: the ticket is in the queue

        waiting = asyncio.create_task(line.acquire("openai", "gpt-4o", "alice", Place(), on_wait=on_wait))
        queue = f"{schema.prefix}queue:gpt-4o"
        await asyncio.wait_for(queued.wait(), 10)
        # From here on the gateway's own clock (whatever reads `time.time`) is two minutes ahead.
        for module in ("dispatch.dispatcher", "keypool.pool", "keypool.leases", "keypool.inventory", "queues.waiting"):
            monkeypatch.setattr(f"{module}.time", ahead, raising=False)
        skewed = Dispatcher(KeyPool(store, schema), lease_ttl_sec=30, key_concurrency=1)
        with_ticket = await refusal(skewed)
        still_queued = int(await store.zcard(queue))
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        with_lease = await refusal(skewed)
        await honest.settle(held, "gpt-4o")
        after_settle = await refusal(skewed)
        await line.stop()
        await store.aclose()
        return with_ticket, still_queued, with_lease, after_settle

    with_ticket, still_queued, with_lease, after_settle = asyncio.run(scenario())
    assert (with_ticket, still_queued) == ("queued", 1)  # the live ticket keeps its place
    assert with_lease == "unavailable"  # the live lease keeps its key
    assert after_settle == "leased"


def test_a_lease_does_the_same_work_with_a_thousand_keys_as_with_ten(store_url):
    """The candidate sets: leasing reads the head of a sorted set, it does not walk the pool.

    Counted as the commands Redis ran (its own `INFO commandstats`, scripts' inner calls included),
    not as time: the same 40 leases and settlements with 10 and with 1,000 keys run as many commands.
    """
    if not store_url:
        pytest.skip("counts commands with the real Redis's INFO commandstats; the embedded store has none")
    import asyncio

    from dispatch import Dispatcher
    from gateway.store import open_store
    from keypool import KeyPool, PoolSchema, parse_keys

    async def commands_for(size: int) -> int:
        store = open_store(store_url)
        pool = Dispatcher(KeyPool(store, PoolSchema(f"size-{size}-{time.monotonic_ns()}:")), lease_ttl_sec=30)
        await pool.pool.register_configured(parse_keys("openai", [f"sk-size-{size}-{i:05d}" for i in range(size)]))
        await pool.settle(await pool.lease_key("openai", "gpt-4o"), "gpt-4o")  # the scripts are loaded now
        await store.config_resetstat()
        for _ in range(40):
            await pool.settle(await pool.lease_key("openai", "gpt-4o"), "gpt-4o")
        stats = await store.info("commandstats")
        await store.aclose()
        return sum(int(v["calls"]) for name, v in stats.items() if name not in ("cmdstat_info", "cmdstat_config"))

    small, large = asyncio.run(commands_for(10)), asyncio.run(commands_for(1000))
    assert large == small, (small, large)


def test_every_operator_change_of_a_key_is_seen_by_the_next_lease(start_gateway, upstream):
    """Disable, enable, remove and add through the admin API: the candidate sets follow each at once."""
    gateway = start_gateway(OPENAI_KEY="sk-refile-a-0001,sk-refile-b-0002", ADMIN_KEY="admin-secret")
    admin = httpx.Client(base_url=gateway.url + "/admin", headers={"authorization": "Bearer admin-secret"})
    ids = {k["key"][-4:]: k["id"] for k in admin.get("/keys").json()["keys"]}

    def keys_used_by(n: int) -> set[str]:
        before = len(upstream.requests)
        for i in range(n):
            assert chat(gateway.url, f"10.8.0.{i}").status_code == 200
        return {r["key"][-4:] for r in upstream.requests[before:] if r["path"] == "/v1/chat/completions"}

    assert keys_used_by(4) == {"0001", "0002"}
    assert admin.post(f"/keys/{ids['0001']}/disable").status_code == 200
    assert keys_used_by(4) == {"0002"}
    assert admin.post(f"/keys/{ids['0001']}/enable").status_code == 200
    assert admin.delete(f"/keys/{ids['0002']}").status_code == 200
    assert keys_used_by(4) == {"0001"}
    assert admin.post("/keys", json={"provider": "openai", "keys": ["sk-refile-c-0003"]}).status_code == 201
    assert admin.post(f"/keys/{ids['0001']}/disable").status_code == 200
    assert keys_used_by(4) == {"0003"}
    assert admin.post(f"/keys/{ids['0001']}/enable").status_code == 200
    assert keys_used_by(4) == {"0001", "0003"}
    admin.close()


class OneAtATime:
    """An OpenAI upstream whose key takes one request at a time and refuses any other with a 429
    (`retry-after: 1`, and the precise `x-ratelimit-reset-requests` a fraction beyond it)."""

    def __init__(self, limit: int = 1) -> None:
        self.limit = limit  # 0: it refuses everything
        self.in_flight = 0
        self.statuses: list[int] = []

    async def __call__(self, scope, receive, send) -> None:
        import asyncio
        import json

        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        if self.in_flight >= self.limit:
            self.statuses.append(429)
            status, headers = 429, [(b"retry-after", b"1"), (b"x-ratelimit-reset-requests", b"1.3s")]
            body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
        else:
            self.in_flight += 1
            await asyncio.sleep(0.2)
            self.in_flight -= 1
            self.statuses.append(200)
            status, headers = 200, []
            body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def test_a_key_that_takes_one_request_at_a_time_is_learned_and_waiters_go_back_one_by_one(
    start_gateway, upstream, store_url
):
    """Adaptive key concurrency: the first burst's 429s teach the pool the key takes one request at a time;
    after its rest the waiters are let back one by one instead of all at once (two gateways on one store)."""
    from conftest import _serve_in_thread

    limited = OneAtATime()
    url, _, stop = _serve_in_thread(limited)
    try:
        env = {"OPENAI_KEY": "sk-one-at-a-time-0001", "OPENAI_BASE_URL": url, "MAX_KEY_ATTEMPTS": "20",
               "USER_CONCURRENCY_LIMIT": "20", "UPSTREAM_RETRIES": "0"}
        gateways = [start_gateway(**env)] + ([start_gateway(**env)] if store_url else [])
        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(lambda i: chat(gateways[i % len(gateways)].url, f"10.7.0.{i}"), range(10)))
        assert [r.status_code for r in replies] == [200] * 10
        served, refused = limited.statuses.count(200), limited.statuses.count(429)
        # The first burst meets the key unknown (up to nine refusals); after that only the slow probes for
        # one more at once (one in five replies at the limit) may be refused.
        assert served == 10
        assert refused <= 9 + 2, limited.statuses
    finally:
        stop()


def test_a_429_rests_the_key_until_the_most_precise_reset_the_reply_gives(start_gateway, upstream):
    """`retry-after: 1` is the reset rounded down; `x-ratelimit-reset-requests: 1.3s` says it precisely."""
    from conftest import _serve_in_thread

    url, _, stop = _serve_in_thread(OneAtATime(limit=0))
    try:
        gateway = start_gateway(OPENAI_KEY="sk-precise-0001", OPENAI_BASE_URL=url, MAX_KEY_ATTEMPTS="1",
                                UPSTREAM_RETRIES="0")
        sent_ms = time.time() * 1000
        refused = chat(gateway.url, "10.7.1.1")
        assert refused.status_code == 502  # its one attempt met the 429
        rest_ms = gateway.key_status("sk-precise-0001")["cooldown_until_ms"] - sent_ms
    finally:
        stop()
    assert 1300 <= rest_ms < 2300, rest_ms
