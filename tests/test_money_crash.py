"""A gateway process killed (SIGKILL) while it holds a cost reservation: the reservation expires with the lease TTL
on the store's clock, the next admission reaps it, and the month's spend is exactly what was served."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from accounts_support import make_user, user_record
from money_support import CHAT, USERS, month_now, usd, worst_case_micro
from processes import free_port, wait_for, wait_until_listening
from scripted_upstream import ScriptedUpstream, json_head

from gateway.cli import render_config_reference

LEASE_TTL_SEC = 4
COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}).encode()


def _environment(**extra: str) -> dict[str, str]:
    names = {row.split("=")[0] for row in render_config_reference("env").splitlines() if not row.startswith("#")}
    return {**{k: v for k, v in os.environ.items() if k not in names}, **extra}


def test_a_killed_gateways_reservation_comes_back_within_the_lease_ttl(start_gateway, store_url, tmp_path):
    if not store_url.startswith("redis://"):
        pytest.skip("a second process shares the budget only through Redis; the embedded store lives in one process")
    first_seen, never = threading.Event(), threading.Event()

    async def answer(exchange):
        if not first_seen.is_set():  # the request the killed gateway is serving: never answered
            first_seen.set()
            await asyncio.to_thread(never.wait, 60)
            return
        await exchange.write(json_head(200, len(COMPLETION)) + COMPLETION)

    upstream = ScriptedUpstream(answer).start()
    doomed = None
    try:
        budget = worst_case_micro(CHAT) * 3 // 2  # one request's worst case at a time
        env = dict(USERS, OPENAI_BASE_URL=upstream.url, MONTHLY_BUDGET_USD=str(usd(budget)),
                   LEASE_TTL_SEC=str(LEASE_TTL_SEC))
        survivor = start_gateway(**env)
        user_id, token = make_user(survivor)
        port = free_port()
        doomed = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=_environment(**env, REDIS_URL=store_url, REDIS_PREFIX=survivor.app.settings.redis_prefix,
                             CHECK_KEYS="false"),
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until_listening(f"http://127.0.0.1:{port}/health", doomed)
        auth = {"authorization": f"Bearer {token}"}
        threading.Thread(target=lambda: _quietly(f"http://127.0.0.1:{port}/v1/chat/completions", auth),
                         daemon=True).start()
        assert first_seen.wait(15)  # admitted (its worst case reserved) and upstream has it
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        killed_at = time.monotonic()

        held = httpx.post(survivor.url + "/v1/chat/completions", json=CHAT, headers=auth)
        assert held.status_code == 429 and held.json()["error"]["code"] == "budget_exceeded"
        assert "more held by requests in flight" in held.json()["error"]["message"]

        replies: list[int] = []
        assert wait_for(lambda: replies.append(
            httpx.post(survivor.url + "/v1/chat/completions", json=CHAT, headers=auth).status_code) or
            replies[-1] == 200, timeout=LEASE_TTL_SEC * 3)
        assert time.monotonic() - killed_at < LEASE_TTL_SEC + 2  # the lease TTL, plus a poll's slack
        record = user_record(survivor, user_id)
        assert record[f"requests:{month_now()}"] == "1"  # the killed request was never settled, never charged
        assert int(record[f"cost:{month_now()}"]) <= budget
    finally:
        never.set()
        if doomed is not None and doomed.poll() is None:
            doomed.kill()
        upstream.stop()


def _quietly(url: str, headers: dict[str, str]) -> None:
    try:
        httpx.post(url, json=CHAT, headers=headers, timeout=30)
    except httpx.HTTPError:
        pass  # its gateway is killed under it
