"""The benchmark suite's phases; `python3 -m bench` runs them and writes the report.

1. Non-streaming: the fake upstream called directly, the bare relay, poolgate
   (one worker pinned to a core, and two workers on one Redis), and LiteLLM's
   proxy, each at 1 and 32 requests in flight, in interleaved rounds.
2. Streaming: time to the first generated token and the gaps between tokens,
   for the same targets against a fake upstream that paces its tokens.
3. Many streams: N slow streams through poolgate at once, its memory meanwhile
   and whether any stream stalled.
4. Queue quality: `bench.queue_quality`.
5. Queue with concurrency-limited keys: `bench.queue_quality.measure_concurrency_limited`.
6. Pool size: `bench.pool_size`, requests/s with 2 to 20,000 keys in the pool.
7. Accounts: `bench.accounts_cost`, poolgate with user tokens, the rate limiter and a quota against
   poolgate with one shared password.
8. Token counting: `bench.token_counting`, 1k- and 100k-token prompts with counting on and off.
9. Translation: `bench.translation`, the same calls native and translated through one poolgate.
10. Budgets: `bench.budgets_cost`, poolgate with user tokens with and without a monthly budget.

Every number that compares two servers is taken in the same run.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import litellm_proxy
from bench.accounts_cost import measure_accounts_cost
from bench.budgets_cost import measure_budgets_cost
from bench.load import closed_loop, many_streams, request_bytes, stream_one_by_one, summary_ms
from bench.pool_size import measure_pool_size
from bench.queue_quality import measure_concurrency_limited, measure_queue_quality
from bench.services import PROXY_KEY, Service, Services, free_port, pin_this_process
from bench.token_counting import measure_token_counting
from bench.translation import measure_translation

MODEL = "gpt-4o"
MODEL_FAMILY = "gpt-4o"  # catalog.families' name for MODEL's family, which quotas are counted in
POOL_KEYS = ["sk-bench-0001", "sk-bench-0002"]  # plain keys: the fake upstream gives them no limits
Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much of everything: `FULL` for the committed results, `SMOKE` to check the suite still works."""

    rounds: int  # interleaved rounds of the non-streaming measurements; the median is reported
    seconds_at_32: float  # per target and round
    requests_at_1: int  # per target and round
    streams_one_by_one: int
    tokens_per_stream: int
    many_streams: int
    slow_stream_seconds: float
    queue_keys: int
    queue_rpm: int
    queue_identities: int
    queue_seconds: float
    pool_sizes: tuple[int, ...]
    pool_size_seconds: float
    limited_keys: int
    limited_seconds: float


FULL = Plan(rounds=3, seconds_at_32=8, requests_at_1=2000, streams_one_by_one=150, tokens_per_stream=20,
            many_streams=1000, slow_stream_seconds=10, queue_keys=4, queue_rpm=20, queue_identities=8,
            queue_seconds=120, pool_sizes=(2, 200, 2000, 20000), pool_size_seconds=8,
            limited_keys=2, limited_seconds=20)
SMOKE = Plan(rounds=1, seconds_at_32=0.5, requests_at_1=50, streams_one_by_one=5, tokens_per_stream=5,
             many_streams=50, slow_stream_seconds=1.5, queue_keys=2, queue_rpm=30, queue_identities=3,
             queue_seconds=4, pool_sizes=(2, 200), pool_size_seconds=0.5,
             limited_keys=1, limited_seconds=2)


@dataclass
class Target:
    """A server to measure and the credential it takes."""

    name: str
    service: Service
    credential: str

    def payload(self, body: bytes) -> bytes:
        return request_bytes("127.0.0.1", self.service.port, "/v1/chat/completions", body,
                             {"authorization": f"Bearer {self.credential}"})


def chat_body(*, stream: bool = False, max_tokens: int = 16) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                            "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def start_targets(services: Services, upstream: Service, redis: Service, litellm_python: Path | str, log: Log,
                  *, two_workers: bool) -> tuple[list[Target], dict[str, str]]:
    """The servers to compare, all relaying to `upstream`, and the reasons any was skipped."""
    targets = [Target("upstream", upstream, POOL_KEYS[0])]
    skipped: dict[str, str] = {}
    targets.append(Target("bare_relay", services.bare_relay(upstream, POOL_KEYS[0]), "unused"))
    targets.append(Target("poolgate", services.poolgate(redis, upstream, POOL_KEYS), PROXY_KEY))
    if two_workers:
        targets.append(Target("poolgate_2_workers",
                              services.poolgate(redis, upstream, POOL_KEYS, workers=2), PROXY_KEY))
    if isinstance(litellm_python, str):
        skipped["litellm"] = litellm_python
    else:
        log("starting LiteLLM's proxy (its imports take a while)")
        config = litellm_proxy.write_config(services.workdir, upstream.url, POOL_KEYS, MODEL, PROXY_KEY)
        port = free_port()
        argv, env = litellm_proxy.command(litellm_python, config, port)
        try:
            service = services.litellm(argv, env, port, litellm_proxy.wait_ready_path())
            targets.append(Target("litellm", service, PROXY_KEY))
        except RuntimeError as error:
            skipped["litellm"] = f"LiteLLM's proxy did not start: {error}"
    return targets, skipped


def non_streaming(plan: Plan, services: Services, redis: Service, litellm_python: Path | str, log: Log
                  ) -> dict[str, Any]:
    upstream = services.mock_upstream()
    targets, skipped = start_targets(services, upstream, redis, litellm_python, log, two_workers=True)
    body = chat_body()
    at_1: dict[str, list[float]] = {t.name: [] for t in targets}
    at_32: dict[str, list[float]] = {t.name: [] for t in targets}
    rps: dict[str, list[float]] = {t.name: [] for t in targets}
    # CPU per answer holds still while other work shares the machine, where requests/s does not.
    cpu_us: dict[str, list[float]] = {t.name: [] for t in targets}
    errors: dict[str, int] = {t.name: 0 for t in targets}
    first_error: dict[str, str] = {}
    for round_number in range(plan.rounds):
        for target in targets:
            log(f"non-streaming round {round_number + 1}/{plan.rounds}: {target.name}")
            payload = target.payload(body)
            one = asyncio.run(closed_loop("127.0.0.1", target.service.port, payload, in_flight=1,
                                          seconds=60, max_requests=plan.requests_at_1, warmup_requests=50))
            cpu_before = target.service.cpu_seconds()
            many = asyncio.run(closed_loop("127.0.0.1", target.service.port, payload, in_flight=32,
                                           seconds=plan.seconds_at_32, warmup_requests=3))
            served = len(many.latencies) + many.errors + 3 * 32  # the warm-up's answers cost CPU too
            if many.latencies:
                cpu_us[target.name].append((target.service.cpu_seconds() - cpu_before) / served * 1e6)
            at_1[target.name] += one.latencies
            at_32[target.name] += many.latencies
            rps[target.name].append(many.requests_per_sec)
            errors[target.name] += one.errors + many.errors
            if one.first_error or many.first_error:
                first_error.setdefault(target.name, one.first_error or many.first_error)
    results: dict[str, Any] = {}
    for target in targets:
        results[target.name] = {
            "requests_per_sec": round(statistics.median(rps[target.name]), 1),
            "requests_per_sec_rounds": [round(value, 1) for value in rps[target.name]],
            "cpu_us_per_request": round(statistics.median(cpu_us[target.name]), 1) if cpu_us[target.name] else None,
            "in_flight_1": summary_ms(at_1[target.name]),
            "in_flight_32": summary_ms(at_32[target.name]),
            "errors": errors[target.name],
            "first_error": first_error.get(target.name, ""),
            "memory_mb": round(target.service.memory_bytes() / 2**20, 1),
        }
    _wind_up(services, targets, skipped, results)
    return {"targets": results, "added_ms": _added(results, "in_flight_1", "in_flight_32")}


def streaming(plan: Plan, services: Services, redis: Service, litellm_python: Path | str, log: Log
              ) -> dict[str, Any]:
    tokens_per_sec = 100.0
    upstream = services.mock_upstream(tokens_per_sec=tokens_per_sec, output_tokens=plan.tokens_per_stream)
    targets, skipped = start_targets(services, upstream, redis, litellm_python, log, two_workers=False)
    body = chat_body(stream=True, max_tokens=plan.tokens_per_stream)
    results: dict[str, Any] = {}
    for target in targets:
        log(f"streaming one by one: {target.name}")
        run = asyncio.run(stream_one_by_one("127.0.0.1", target.service.port, target.payload(body),
                                            streams=plan.streams_one_by_one))
        results[target.name] = {"ttft": summary_ms(run.ttfts), "gap": summary_ms(run.gaps), "errors": run.errors,
                                "first_error": run.first_error}
    _wind_up(services, targets, skipped, results)
    return {"tokens_per_sec": tokens_per_sec, "tokens_per_stream": plan.tokens_per_stream, "targets": results,
            "added_ms": _added(results, "ttft", "gap")}


def held_streams(plan: Plan, services: Services, redis: Service, log: Log) -> dict[str, Any]:
    tokens = 20
    tokens_per_sec = tokens / plan.slow_stream_seconds
    upstream = services.mock_upstream(tokens_per_sec=tokens_per_sec, output_tokens=tokens)
    gateway = services.poolgate(redis, upstream, POOL_KEYS, USER_CONCURRENCY_LIMIT="0")
    target = Target("poolgate", gateway, PROXY_KEY)
    warm = asyncio.run(closed_loop("127.0.0.1", gateway.port, target.payload(chat_body()), in_flight=1, seconds=5,
                                   max_requests=20))
    idle_bytes = gateway.memory_bytes()
    stall_after = max(2.0, 4 / tokens_per_sec)
    log(f"{plan.many_streams} streams at once, {tokens} tokens each over {plan.slow_stream_seconds:g} s")
    run = asyncio.run(many_streams("127.0.0.1", gateway.port, target.payload(chat_body(stream=True, max_tokens=tokens)),
                                   streams=plan.many_streams, tokens_each=tokens, stall_after=stall_after,
                                   sample_memory=gateway.memory_bytes))
    services.stop(gateway)
    services.stop(upstream)
    peak = max(sample for _, sample in run.samples)
    return {
        "streams": run.opened, "tokens_each": tokens, "seconds_each": plan.slow_stream_seconds,
        "completed": run.completed, "failed": run.failed + warm.errors, "stalled": run.stalled,
        "stall_threshold_sec": stall_after, "longest_silence_sec": round(run.longest_silence, 3),
        "first_error": run.first_error or warm.first_error,
        "idle_memory_mb": round(idle_bytes / 2**20, 1), "peak_memory_mb": round(peak / 2**20, 1),
        "memory_samples": [(round(at, 2), round(sample / 2**20, 1)) for at, sample in run.samples],
    }


def _wind_up(services: Services, targets: list[Target], skipped: dict[str, str], results: dict[str, Any]) -> None:
    """Record why any server was skipped, and stop the ones measured (the fake upstream last)."""
    for name, reason in skipped.items():
        results[name] = {"skipped": reason}
    for target in sorted(targets, key=lambda t: t.name == "upstream"):
        services.stop(target.service)


def _added(results: dict[str, Any], *measures: str) -> dict[str, Any]:
    """Each target's p50 and p99 minus the fake upstream's own, in milliseconds."""
    base = results.get("upstream", {})
    added: dict[str, Any] = {}
    for name, result in results.items():
        if name == "upstream" or "skipped" in result:
            continue
        added[name] = {}
        for measure in measures:
            mine, theirs = result.get(measure, {}), base.get(measure, {})
            if mine.get("count") and theirs.get("count"):
                added[name][measure] = {q: round(mine[f"{q}_ms"] - theirs[f"{q}_ms"], 3) for q in ("p50", "p99")}
    return added


def run_suite(plan: Plan, *, litellm: bool, only: set[str], cache_dir: Path, log: Log) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with Services() as services:
        pin_this_process(services.other_cpu)  # the load generator shares a core with the upstream and Redis
        report["cores"] = {"server": services.server_cpu, "everything_else": services.other_cpu}
        litellm_python: Path | str = "not asked for (--no-litellm)"
        if litellm and only & {"non_streaming", "streaming"}:
            log("preparing LiteLLM's virtual environment")
            litellm_python = litellm_proxy.ensure_venv(cache_dir, log)
            if isinstance(litellm_python, Path):
                report["litellm_version"] = litellm_proxy.version_of(litellm_python)
        if only & {"non_streaming", "streaming", "many_streams", "pool_size", "accounts", "token_counting",
                   "translation", "budgets"}:
            redis = services.redis()
        if "non_streaming" in only:
            report["non_streaming"] = non_streaming(plan, services, redis, litellm_python, log)
        if "streaming" in only:
            report["streaming"] = streaming(plan, services, redis, litellm_python, log)
        if "many_streams" in only:
            report["many_streams"] = held_streams(plan, services, redis, log)
        if "pool_size" in only:
            report["pool_size"] = measure_pool_size(plan.pool_sizes, plan.pool_size_seconds, services, redis,
                                                    POOL_KEYS, chat_body(), log)
        if "accounts" in only:
            report["accounts"] = measure_accounts_cost(plan.rounds, plan.seconds_at_32, services, redis, POOL_KEYS,
                                                       chat_body(), MODEL_FAMILY, log)
        if "budgets" in only:
            report["budgets"] = measure_budgets_cost(plan.rounds, plan.seconds_at_32, services, redis, POOL_KEYS,
                                                     chat_body(), MODEL_FAMILY, log)
        if "token_counting" in only:
            report["token_counting"] = measure_token_counting(services, redis, POOL_KEYS, plan.requests_at_1 // 4,
                                                              log)
        if "translation" in only:
            report["translation"] = measure_translation(
                rounds=plan.rounds, requests_at_1=plan.requests_at_1, seconds_at_32=plan.seconds_at_32,
                streams=plan.streams_one_by_one, tokens=plan.tokens_per_stream, services=services, redis=redis,
                log=log)
    if "queue" in only:
        log(f"queue quality: {plan.queue_keys} keys x {plan.queue_rpm} rpm, {plan.queue_identities} identities, "
            f"{plan.queue_seconds:g} s at twice the capacity")
        report["queue"] = measure_queue_quality(keys=plan.queue_keys, rpm=plan.queue_rpm,
                                                identities=plan.queue_identities, seconds=plan.queue_seconds)
    if "queue_concurrency" in only:
        log(f"queue with concurrency-limited keys: {plan.limited_keys} keys taking one request at a time, "
            f"{plan.queue_identities} identities, {plan.limited_seconds:g} s at twice the capacity")
        report["queue_concurrency"] = measure_concurrency_limited(
            keys=plan.limited_keys, identities=plan.queue_identities, seconds=plan.limited_seconds)
    return report
