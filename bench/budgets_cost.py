"""What monthly budgets cost on the hot path: poolgate with user tokens and a quota, with and without a budget.

With a budget (`MONTHLY_BUDGET_USD`), admission's script also reads the month's spend, reaps and sums the
user's cost reservations and adds this request's worst case; settlement's script also records the cost per
user, key, family and month and appends the usage event. Neither adds a round trip; the target is to keep
within 15% of the same gateway without a budget. Measured in interleaved rounds, one at a time, on one core.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

from bench.accounts_cost import BENCH_TOKEN, make_bench_user
from bench.load import closed_loop, request_bytes, summary_ms
from bench.services import Service, Services


def measure_budgets_cost(rounds: int, seconds: float, services: Services, redis_service: Service,
                         keys: list[str], body: bytes, model_family: str, log: Callable[[str], None]
                         ) -> dict[str, Any]:
    upstream = services.mock_upstream()
    make_bench_user(redis_service, model_family)
    targets = {
        "budgets_off": services.poolgate(redis_service, upstream, keys, GATEKEEPER="user_token"),
        # A budget too large to run out: every request pays for checking, reserving and recording it.
        "budgets_on": services.poolgate(redis_service, upstream, keys, GATEKEEPER="user_token",
                                        MONTHLY_BUDGET_USD="1000000000"),
    }
    rps: dict[str, list[float]] = {name: [] for name in targets}
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    errors = dict.fromkeys(targets, 0)
    first_error: dict[str, str] = {}
    for number in range(rounds):
        for name, service in targets.items():
            log(f"budgets cost round {number + 1}/{rounds}: {name}")
            payload = request_bytes("127.0.0.1", service.port, "/v1/chat/completions", body,
                                    {"authorization": f"Bearer {BENCH_TOKEN}"})
            run = asyncio.run(closed_loop("127.0.0.1", service.port, payload, in_flight=32, seconds=seconds,
                                          warmup_requests=3))
            rps[name].append(run.requests_per_sec)
            latencies[name] += run.latencies
            errors[name] += run.errors
            if run.first_error:
                first_error.setdefault(name, run.first_error)
    for service in targets.values():
        services.stop(service)
    services.stop(upstream)
    results: dict[str, dict[str, Any]] = {
        name: {"requests_per_sec": round(statistics.median(rps[name]), 1),
               "requests_per_sec_rounds": [round(v, 1) for v in rps[name]],
               "in_flight_32": summary_ms(latencies[name]), "errors": errors[name],
               "first_error": first_error.get(name, "")}
        for name in targets
    }
    off, on = (results[n]["requests_per_sec"] for n in ("budgets_off", "budgets_on"))
    return {"targets": results, "ratio": round(on / off, 3) if off else None}
