"""Token counting: what counting every prompt costs a request, and how fast counting is against tiktoken.

Two prompts (about 1,000 and 100,000 tokens of varied English) are sent
through a fresh poolgate with `COUNT_PROMPT_TOKENS` on (and a context cap
that makes every prompt counted) and off, one request
in flight, and the latencies compared. In this process, the counter
(`count_prompt_tokens`) and tiktoken's own `encode` of the same text are timed
on the same prompts: tiktoken's speed is the limit counting can reach.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

from bench.load import closed_loop, request_bytes, summary_ms
from bench.services import PROXY_KEY, Service, Services

Log = Callable[[str], None]
ROUNDS = 3
_WORDS = ("the gateway counts every prompt before it leaves so that caps and quotas see what a request "
          "will cost; tokens, keys, queues, families, streams and budgets are shared by friends who "
          "never see a key. Émigré naïve café 3.14159 2026-12-03 {json: [1, 2, 3]} def f(x): return x").split()


def prompt_of(tokens: int, seed: int = 7) -> str:
    """Varied text of about `tokens` o200k tokens (words drawn at random, so no run repeats)."""
    from catalog.tokens import count_tokens

    rng = random.Random(seed)
    words: list[str] = []
    text = ""
    while True:
        words.extend(rng.choice(_WORDS) for _ in range(max(tokens // 4, 50)))
        text = " ".join(words)
        if count_tokens(text, "o200k_base") >= tokens:
            return text


def chat(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


def counting_speed(payload: dict[str, Any], repeats: int) -> dict[str, float]:
    """Tokens per second of poolgate's counter and of tiktoken alone, on the same prompt, in this process."""
    from catalog.encodings import encoding
    from catalog.tokens import count_prompt_tokens

    enc = encoding("o200k_base")
    assert enc is not None
    text = payload["messages"][0]["content"]
    tokens = count_prompt_tokens("openai", "gpt-4o", payload)  # warms the encoder

    ours, theirs = [], []
    for _ in range(repeats):  # alternated, so a noisy neighbour slows both alike
        began = time.perf_counter()
        count_prompt_tokens("openai", "gpt-4o", payload)
        ours.append(time.perf_counter() - began)
        began = time.perf_counter()
        enc.encode(text, disallowed_special=())
        theirs.append(time.perf_counter() - began)
    ours_s, theirs_s = min(ours), min(theirs)
    return {"tokens": tokens, "poolgate_tokens_per_sec": round(tokens / ours_s),
            "poolgate_ms": round(ours_s * 1000, 3), "tiktoken_tokens_per_sec": round(tokens / theirs_s),
            "tiktoken_ms": round(theirs_s * 1000, 3), "ratio_to_tiktoken": round(theirs_s / ours_s, 3)}


def measure_token_counting(services: Services, redis: Service, pool_keys: list[str], requests: int, log: Log
                           ) -> dict[str, Any]:
    upstream = services.mock_upstream()
    results: dict[str, Any] = {}
    for size in (1_000, 100_000):
        payload = chat(prompt_of(size))
        body = json.dumps(payload).encode()
        count = max(requests if size == 1_000 else requests // 20, 5)
        row: dict[str, Any] = {"body_bytes": len(body), "speed": counting_speed(payload, repeats=9)}
        # A prompt is counted only when something reads the count (gateway/policy.py); a context cap above the
        # prompt but below what its body's size could hold makes the "on" gateway count every request.
        gateways = {
            "on": services.poolgate(redis, upstream, pool_keys, CHECK_KEYS="false", COUNT_PROMPT_TOKENS="true",
                                    MAX_CONTEXT_TOKENS_OPENAI=str(2 * size + 1_000)),
            "off": services.poolgate(redis, upstream, pool_keys, CHECK_KEYS="false", COUNT_PROMPT_TOKENS="false"),
        }
        latencies: dict[str, list[float]] = {"on": [], "off": []}
        errors = {"on": 0, "off": 0}
        for round_number in range(ROUNDS):  # interleaved rounds: both see the same neighbours
            for counting, gateway in gateways.items():
                message = request_bytes("127.0.0.1", gateway.port, "/v1/chat/completions", body,
                                        {"authorization": f"Bearer {PROXY_KEY}"})
                log(f"token counting {counting}, {size:,}-token prompt, round {round_number + 1}/{ROUNDS}: "
                    f"{count} requests one at a time")
                run = asyncio.run(closed_loop("127.0.0.1", gateway.port, message, in_flight=1, seconds=120,
                                              max_requests=count, warmup_requests=3))
                latencies[counting] += run.latencies
                errors[counting] += run.errors
        for counting, gateway in gateways.items():
            row[f"counting_{counting}"] = {"in_flight_1": summary_ms(latencies[counting]), "errors": errors[counting]}
            services.stop(gateway)
        on, off = row["counting_on"]["in_flight_1"], row["counting_off"]["in_flight_1"]
        if on.get("count") and off.get("count"):
            row["added_p50_ms"] = round(on["p50_ms"] - off["p50_ms"], 3)
        results[f"{size}_tokens"] = row
        log(f"{size:,}-token prompt: counting adds {row.get('added_p50_ms')} ms at p50; "
            f"poolgate counts {row['speed']['poolgate_tokens_per_sec']:,} tokens/s, tiktoken alone "
            f"{row['speed']['tiktoken_tokens_per_sec']:,}")
    services.stop(upstream)
    return results

