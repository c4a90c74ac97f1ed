"""What translation costs: the same calls native and translated through one poolgate, side by side.

Four rows, each a chat turn sent by a client of one format to a model of one
provider: OpenAI format to GPT and Anthropic format to Claude (native), OpenAI
format to Claude and Anthropic format to GPT (translated). Each translated row
is compared with the native row that reaches the *same* upstream API, so the
difference is what translating the request and the reply costs (the fake
upstream's two APIs do not cost the same to answer). Non-streaming: latency at
1 in flight and requests/s at 32; streaming: time to first token and the gaps
between tokens, one stream at a time, tokens paced by the fake upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from bench.load import closed_loop, request_bytes, stream_one_by_one, summary_ms
from bench.services import PROXY_KEY, Service, Services

OPENAI_KEYS = ["sk-bench-0001", "sk-bench-0002"]
ANTHROPIC_KEYS = ["sk-ant-bench-0001", "sk-ant-bench-0002"]
GPT = "gpt-4o"
CLAUDE = "claude-sonnet-4-5"
# row -> (path, model, the native row reaching the same upstream API; None for a native row)
ROWS: dict[str, tuple[str, str, str | None]] = {
    "openai_to_gpt": ("/v1/chat/completions", GPT, None),
    "anthropic_to_claude": ("/v1/messages", CLAUDE, None),
    "openai_to_claude": ("/v1/chat/completions", CLAUDE, "anthropic_to_claude"),
    "anthropic_to_gpt": ("/v1/messages", GPT, "openai_to_gpt"),
}
Log = Callable[[str], None]


def _payload(port: int, row: str, *, stream: bool, max_tokens: int) -> bytes:
    path, model, _ = ROWS[row]
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    return request_bytes("127.0.0.1", port, path, json.dumps(body).encode(), {"authorization": f"Bearer {PROXY_KEY}"})


def _gateway(services: Services, redis: Service, upstream: Service) -> Service:
    return services.poolgate(redis, upstream, OPENAI_KEYS, ANTHROPIC_KEY=",".join(ANTHROPIC_KEYS),
                             ANTHROPIC_BASE_URL=upstream.url)


def measure_translation(*, rounds: int, requests_at_1: int, seconds_at_32: float, streams: int, tokens: int,
                        services: Services, redis: Service, log: Log) -> dict[str, Any]:
    upstream = services.mock_upstream()
    gateway = _gateway(services, redis, upstream)
    at_1: dict[str, list[float]] = {row: [] for row in ROWS}
    rps: dict[str, list[float]] = {row: [] for row in ROWS}
    errors = dict.fromkeys(ROWS, 0)
    first_error: dict[str, str] = {}
    for number in range(rounds):
        for row in ROWS:  # interleaved, so a slow moment of the machine does not land on one row
            log(f"translation, non-streaming round {number + 1}/{rounds}: {row}")
            payload = _payload(gateway.port, row, stream=False, max_tokens=16)
            one = asyncio.run(closed_loop("127.0.0.1", gateway.port, payload, in_flight=1, seconds=60,
                                          max_requests=requests_at_1, warmup_requests=50))
            many = asyncio.run(closed_loop("127.0.0.1", gateway.port, payload, in_flight=32, seconds=seconds_at_32,
                                           warmup_requests=3))
            at_1[row] += one.latencies
            rps[row].append(many.requests_per_sec)
            errors[row] += one.errors + many.errors
            if one.first_error or many.first_error:
                first_error.setdefault(row, one.first_error or many.first_error)
    services.stop(gateway)
    services.stop(upstream)

    tokens_per_sec = 100.0
    upstream = services.mock_upstream(tokens_per_sec=tokens_per_sec, output_tokens=tokens)
    gateway = _gateway(services, redis, upstream)
    streamed: dict[str, Any] = {}
    for row in ROWS:
        log(f"translation, streaming one by one: {row}")
        run = asyncio.run(stream_one_by_one("127.0.0.1", gateway.port,
                                            _payload(gateway.port, row, stream=True, max_tokens=tokens),
                                            streams=streams))
        streamed[row] = run
        errors[row] += run.errors
        if run.first_error:
            first_error.setdefault(row, run.first_error)
    services.stop(gateway)
    services.stop(upstream)

    results: dict[str, Any] = {}
    for row in ROWS:
        results[row] = {
            "in_flight_1": summary_ms(at_1[row]),
            "requests_per_sec": round(sorted(rps[row])[len(rps[row]) // 2], 1) if rps[row] else 0.0,
            "ttft": summary_ms(streamed[row].ttfts), "gap": summary_ms(streamed[row].gaps),
            "errors": errors[row], "first_error": first_error.get(row, ""),
        }
    return {"tokens_per_sec": tokens_per_sec, "tokens_per_stream": tokens, "rows": results,
            "added_ms": _added(results)}


def _added(results: dict[str, Any]) -> dict[str, Any]:
    """Each translated row's p50 and p99 minus those of the native row reaching the same upstream API."""
    added: dict[str, Any] = {}
    for row, (_, _, native) in ROWS.items():
        if native is None:
            continue
        added[row] = {}
        for measure in ("in_flight_1", "ttft", "gap"):
            mine, theirs = results[row][measure], results[native][measure]
            if mine.get("count") and theirs.get("count"):
                added[row][measure] = {q: round(mine[f"{q}_ms"] - theirs[f"{q}_ms"], 3) for q in ("p50", "p99")}
    return added
