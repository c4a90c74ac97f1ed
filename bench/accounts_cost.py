"""What accounts cost on the hot path: poolgate with one shared password against poolgate with user tokens,
the rate limiter and a quota, both relaying to the same fake upstream through the same Redis.

The user-token gateway runs every request through `accounts/admit.lua` (token, limits, quota reservation),
pipelined with the lease, and corrects the reservation in settlement; the target is to keep within 15% of
the plain gateway's requests/s. The two are measured in interleaved rounds, one at a time, on the same core.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

import redis

from accounts.schema import AccountsSchema, token_hash
from bench.load import closed_loop, request_bytes, summary_ms
from bench.services import PROXY_KEY, Service, Services

BENCH_TOKEN = "pg-bench-user-token-0001"


def make_bench_user(redis_service: Service, model_family: str) -> None:
    """One user with a quota too large to run out, written as the users' admin API stores one."""
    schema = AccountsSchema()  # the default REDIS_PREFIX, as the bench's gateways use
    client = redis.Redis(port=redis_service.port)
    client.hset(schema.user("bench"), mapping={"id": "bench", "token_hash": token_hash(BENCH_TOKEN),
                                              "type": "normal", f"quota:{model_family}": 10**15})
    client.hset(schema.user_tokens, token_hash(BENCH_TOKEN), "bench")
    client.close()


def measure_accounts_cost(rounds: int, seconds: float, services: Services, redis_service: Service,
                          keys: list[str], body: bytes, model_family: str, log: Callable[[str], None]
                          ) -> dict[str, Any]:
    upstream = services.mock_upstream()
    make_bench_user(redis_service, model_family)
    # The user-token gateway's limits are high enough never to refuse: every request pays for checking and
    # recording them.
    targets = {
        "poolgate": (services.poolgate(redis_service, upstream, keys), PROXY_KEY),
        "poolgate_user_token": (services.poolgate(
            redis_service, upstream, keys, GATEKEEPER="user_token", RATE_LIMITER="true",
            RATE_LIMIT_USER_PER_MINUTE="100000000", RATE_LIMIT_USER_PER_HOUR="1000000000"), BENCH_TOKEN),
    }
    rps: dict[str, list[float]] = {name: [] for name in targets}
    cpu_us: dict[str, list[float]] = {name: [] for name in targets}  # holds still where requests/s does not
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    errors = dict.fromkeys(targets, 0)
    first_error: dict[str, str] = {}
    for number in range(rounds):
        for name, (service, credential) in targets.items():
            log(f"accounts cost round {number + 1}/{rounds}: {name}")
            payload = request_bytes("127.0.0.1", service.port, "/v1/chat/completions", body,
                                    {"authorization": f"Bearer {credential}"})
            cpu_before = service.cpu_seconds()
            run = asyncio.run(closed_loop("127.0.0.1", service.port, payload, in_flight=32, seconds=seconds,
                                          warmup_requests=3))
            served = len(run.latencies) + run.errors + 3 * 32  # the warm-up's answers cost CPU too
            if run.latencies:
                cpu_us[name].append((service.cpu_seconds() - cpu_before) / served * 1e6)
            rps[name].append(run.requests_per_sec)
            latencies[name] += run.latencies
            errors[name] += run.errors
            if run.first_error:
                first_error.setdefault(name, run.first_error)
    for service, _ in targets.values():
        services.stop(service)
    services.stop(upstream)
    results: dict[str, dict[str, Any]] = {
        name: {"requests_per_sec": round(statistics.median(rps[name]), 1),
               "requests_per_sec_rounds": [round(v, 1) for v in rps[name]],
               "cpu_us_per_request": round(statistics.median(cpu_us[name]), 1) if cpu_us[name] else None,
               "in_flight_32": summary_ms(latencies[name]), "errors": errors[name],
               "first_error": first_error.get(name, "")}
        for name in targets
    }
    plain, users = (results[n]["requests_per_sec"] for n in ("poolgate", "poolgate_user_token"))
    plain_cpu, users_cpu = (results[n]["cpu_us_per_request"] for n in ("poolgate", "poolgate_user_token"))
    return {"targets": results, "ratio": round(users / plain, 3) if plain else None,
            "cpu_ratio": round(plain_cpu / users_cpu, 3) if plain_cpu and users_cpu else None}
