"""Shared by the status page tests: a pool with keys in every state, some traffic, and people waiting.

Queues are another component; the status page reads them through
`PoolgateApp.queue_stats()`, so tests stand in for them there with the numbers a
visitor should then see.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

# The fake upstream reads a key's behaviour from its text: revoked answers 401, noquota says the account is
# out of credit; the "resting" key is told to rest by `upstream_rests`.
OPENAI_KEYS = "sk-good-Zq7Xw9aa,sk-resting-Kd83Jf02,sk-revoked-Pw02Lm55,sk-noquota-Hh61Tt04"
ANTHROPIC_KEYS = "sk-ant-good-Rr55Yy81,sk-ant-good-Mm20Qq47"
PROXY_KEY = "proxy-pass-Vb93Nc"
ADMIN_KEY = "admin-key-Gh72Lp"
SECRETS = (*OPENAI_KEYS.split(","), *ANTHROPIC_KEYS.split(","), PROXY_KEY, ADMIN_KEY)

BUSY_ENV = {
    "OPENAI_KEY": OPENAI_KEYS,
    "ANTHROPIC_KEY": ANTHROPIC_KEYS,
    "GATEKEEPER": "proxy_key",
    "PROXY_KEY": PROXY_KEY,
    "ADMIN_KEY": ADMIN_KEY,
    "UPSTREAM_RETRIES": "0",
    # Traffic alone decides the keys' states here, not start-up key checks.
    "CHECK_KEYS": "false",
}


def page_body(html: str) -> str:
    return base64.b64encode(html.encode()).decode()


def send_traffic(gateway: Any, *, openai_chats: int = 8, claude_messages: int = 3) -> None:
    """Enough requests that every OpenAI key has been tried, so the revoked and the out-of-credit one are known."""
    headers = {"Authorization": f"Bearer {PROXY_KEY}"}
    for _ in range(openai_chats):
        reply = httpx.post(
            gateway.url + "/proxy/openai/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers, timeout=30,
        )
        assert reply.status_code == 200
    for _ in range(claude_messages):
        reply = httpx.post(
            gateway.url + "/proxy/anthropic/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            headers=headers, timeout=30,
        )
        assert reply.status_code == 200


GPT4O_WAITS = (0, 2, 5, 3, 9, 14, 20, 17, 26, 31, 38, 35, 44, 40, 42)
SONNET_WAITS = (30, 45, 60, 80, 72, 90, 110, 104, 98, 92, 96, 90, 94, 97, 95)


def people_waiting(gateway: Any) -> None:
    """Stand in for the queues: 3 waiting for gpt-4o (about 42 s), 7 for Claude Sonnet (about 95 s)."""
    now = time.time()

    async def queue_stats(keys: Any = None) -> dict[str, dict[str, Any]]:
        return {
            "gpt-4o": {
                "in_queue": 3, "estimated_wait_sec": 42.0,
                "recent_waits": [[now - 840 + 60 * i, float(w)] for i, w in enumerate(GPT4O_WAITS)],
            },
            "claude-sonnet": {
                "in_queue": 7, "estimated_wait_sec": 95.0,
                "recent_waits": [[now - 420 + 30 * i, float(w)] for i, w in enumerate(SONNET_WAITS)],
            },
            "gpt-4o-mini": {"in_queue": 0, "estimated_wait_sec": 1.4, "recent_waits": []},
        }

    gateway.app.queue_stats = queue_stats


def upstream_rests(gateway: Any, secret: str, seconds: float = 300.0) -> None:
    """What the relay does when upstream answers "rate limited, retry in N s": the key rests that long.

    (The fake upstream's limits are seconds long, or avoided altogether by pacing; a page test needs a rest
    that outlasts it.)
    """
    from keypool.pool import RATE_LIMITED

    pool = gateway.app.dispatch
    others = tuple(k["id"] for k in gateway.keys() if not k["key"].endswith(secret[-4:]))

    async def rest() -> None:
        # Hold leases on the other keys until the pool (fewest in flight first) hands out this one.
        held = []
        lease = await pool.lease_key("openai", "gpt-4o")
        while lease.key_id in others:
            held.append(lease)
            lease = await pool.lease_key("openai", "gpt-4o")
        for other in held:
            await pool.settle(other, "gpt-4o")
        await pool.settle(lease, "gpt-4o", RATE_LIMITED, cooldown_sec=seconds, reason="429 rate limited")

    gateway.run(rest())


def busy_gateway(start_gateway: Any, **env: str) -> Any:
    gateway = start_gateway(**{**BUSY_ENV, **env})
    send_traffic(gateway)
    upstream_rests(gateway, "sk-resting-Kd83Jf02")
    people_waiting(gateway)
    return gateway

