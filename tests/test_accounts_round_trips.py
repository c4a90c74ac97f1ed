"""The hot path's budget holds with user tokens, the limiter and quotas on: two Redis round trips a request.

Admission's script travels with the fast path's lease attempt, in one write; settlement (the key back,
the quota corrected) is the other. Counted from Redis's side of the wire: a relay in front of Redis
counts the bursts the gateway's script connection sends, each one a round trip.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from accounts_support import make_user, user_record
from processes import wait_for

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


class CountingRelay:
    """A TCP relay to Redis that counts, per connection, the writes that came from the gateway."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.bursts: list[list[bytes]] = []  # per connection: what each read from the gateway held
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()

        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        assert ready.wait(10)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        redis_in, redis_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        bursts: list[bytes] = []
        self.bursts.append(bursts)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, log: list[bytes] | None) -> None:
            while data := await source.read(1 << 16):
                if log is not None:
                    log.append(data)
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pump(client_in, redis_out, bursts), pump(redis_in, client_out, None),
                             return_exceptions=True)

    def script_bursts(self) -> int:
        """Bursts sent on the connection that carries scripts (its first command is EVALSHA or EVAL)."""
        links = [b for b in self.bursts if b and b"EVAL" in b[0][:40]]
        assert len(links) == 1, "one script connection per gateway process"
        return len(links[0])


def test_a_user_request_that_finds_a_free_key_costs_two_round_trips(start_gateway, store_url):
    if not store_url:
        pytest.skip("the embedded store has no wire: round trips exist only with Redis")
    relay = CountingRelay(int(store_url.rsplit(":", 1)[1].split("/")[0]))
    gateway = start_gateway(
        OPENAI_KEY="sk-real-openai-key-1234", GATEKEEPER="user_token", RATE_LIMITER="true",
        RATE_LIMIT_USER_PER_MINUTE="100", REDIS_URL=f"redis://127.0.0.1:{relay.port}/0",
    )
    user_id, token = make_user(gateway, **{"quota:gpt-4o-mini": 1_000_000})

    def ask(n: int) -> None:
        reply = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT,
                           headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 200
        # Settlement follows the reply out; the next request starts once it is recorded.
        assert wait_for(lambda: user_record(gateway, user_id)["prompt_count"] == str(n))

    ask(1)  # the first use of each script loads it into Redis (NOSCRIPT, then EVAL): not the steady state
    before = relay.script_bursts()
    for n in range(2, 7):
        ask(n)
    assert relay.script_bursts() - before == 2 * 5
