"""Keys go back to the pool when a client hangs up, when a process dies, and across processes."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from processes import wait_for
from scripted_upstream import STREAM_HEAD, Exchange, ScriptedUpstream, chunked

from dispatch import Dispatcher
from fake_upstream import run_mock_upstream_in_thread
from gateway.store import open_store
from keypool import KeyPool, PoolSchema, parse_keys


@pytest.fixture
def slow_upstream():
    handle = run_mock_upstream_in_thread(tokens_per_sec=20, output_tokens=200)
    yield handle
    handle.stop()


def _openai_delta(text: str) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return chunked(b"data: " + json.dumps(chunk).encode() + b"\n\n")


async def _two_hundred_tokens_at_twenty_a_second(exchange: Exchange) -> None:
    await exchange.write(STREAM_HEAD)
    for n in range(200):
        await exchange.write(_openai_delta(f" word{n}"))
        if await exchange.wait_gone(0.05):
            return
    await exchange.write(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")


def test_a_client_that_hangs_up_mid_stream_cancels_upstream_and_frees_its_key(start_gateway):
    upstream = ScriptedUpstream(_two_hundred_tokens_at_twenty_a_second).start()
    try:
        gateway = start_gateway(OPENAI_KEY="sk-stream-key-0001", OPENAI_BASE_URL=upstream.url)
        body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "a long story"}]}
        with httpx.stream("POST", gateway.url + "/proxy/openai/v1/chat/completions", json=body, timeout=30) as reply:
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/event-stream")
            chunks = reply.iter_raw()  # kept referenced: dropping the iterator closes the connection
            assert next(chunks).startswith(b"data: ")
            assert gateway.key_status("0001")["inflight"] == 1
            streaming = upstream.wait_for_request(0)
            assert not streaming.gone.is_set(), "upstream is still streaming while the client reads"
            left_at = time.monotonic()
        # The client is gone after ~1 of 200 tokens (10 s of stream): upstream must be cut off at once.
        assert streaming.gone.wait(5), "upstream saw its connection closed"
        assert streaming.gone_at is not None and streaming.gone_at - left_at < 5
        assert wait_for(lambda: gateway.key_status("0001")["inflight"] == 0, timeout=5)
        assert wait_for(lambda: gateway.usage_totals()["prompts"] == 1, timeout=5)
    finally:
        upstream.stop()


def test_streams_are_relayed_as_they_are_produced_not_buffered(start_gateway, slow_upstream):
    gateway = start_gateway(OPENAI_KEY="sk-stream-key-0001", OPENAI_BASE_URL=slow_upstream.url)
    body = {"model": "gpt-4o", "stream": True, "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}
    arrivals = []
    with httpx.stream("POST", gateway.url + "/proxy/openai/v1/chat/completions", json=body, timeout=30) as reply:
        for chunk in reply.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    events = b"".join(c for _, c in arrivals).count(b"data: ")
    assert events >= 40
    # at 20 tokens/s, 40 tokens take ~2 s: a buffering relay would deliver them in one burst at the end
    assert len(arrivals) >= 10
    assert arrivals[-1][0] - arrivals[0][0] > 1.0


def test_a_lease_held_by_a_crashed_process_expires(store_url):
    async def scenario():
        store = open_store(store_url)
        pool = Dispatcher(KeyPool(store, PoolSchema(f"crash-{time.monotonic_ns()}:")), lease_ttl_sec=0.3)
        await pool.pool.register_configured(parse_keys("openai", ["sk-crash-key-0001"]))
        await pool.lease_key("openai", "gpt-4o")  # the holder "crashes": it never renews nor settles
        assert (await pool.pool.describe_keys())[0]["inflight"] == 1
        await asyncio.sleep(0.5)
        await pool.lease_key("openai", "gpt-4o")  # any later lease reaps what expired
        inflight = (await pool.pool.describe_keys())[0]["inflight"]
        await store.aclose()
        return inflight

    assert asyncio.run(scenario()) == 1, "only the live lease is still counted"


def test_a_renewed_lease_outlives_its_ttl(store_url):
    async def scenario():
        store = open_store(store_url)
        schema = PoolSchema(f"renew-{time.monotonic_ns()}:")
        pool = Dispatcher(KeyPool(store, schema), lease_ttl_sec=2.0)
        await pool.pool.register_configured(parse_keys("openai", ["sk-renew-key-0001"]))
        pool.keeper.start()
        lease = await pool.lease_key("openai", "gpt-4o")
        first_expiry = await store.zscore(schema.leases, lease.lease_id)
        # Ordered by what the store shows, not by sleeping: the lease's first expiry is over, and
        # its keeper has moved its expiry past it.
        deadline = time.monotonic() + 30
        while True:
            expiry = await store.zscore(schema.leases, lease.lease_id)
            assert expiry is not None, "the lease was reaped although its keeper renews it"
            now_ms = await pool.pool.store_ms()
            if expiry > first_expiry and now_ms > first_expiry:
                break
            assert time.monotonic() < deadline, "the keeper never renewed the lease"
            await asyncio.sleep(0.05)
        await pool.lease_key("openai", "gpt-4o")  # any lease reaps what expired
        inflight = (await pool.pool.describe_keys())[0]["inflight"]
        await pool.settle(lease, "gpt-4o")
        await pool.keeper.stop()
        await store.aclose()
        return inflight

    assert asyncio.run(scenario()) == 2, "the renewed lease is still counted next to the new one"


def test_two_gateways_on_one_redis_share_one_pool(start_gateway, upstream, store_url):
    if not store_url:
        pytest.skip("the embedded store is one process's own; sharing needs REDIS_URL")
    first = start_gateway(OPENAI_KEY="sk-revoked-shared-0001,sk-healthy-shared-0002")
    second = start_gateway(OPENAI_KEY="sk-revoked-shared-0001,sk-healthy-shared-0002")
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for gateway in (first, second, first, second):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=chat).status_code == 200
    tried = [r["key"] for r in upstream.requests]
    assert tried.count("sk-revoked-shared-0001") == 1, "what one process learns about a key, all know"
    assert first.usage_totals()["prompts"] == second.usage_totals()["prompts"] == 4
