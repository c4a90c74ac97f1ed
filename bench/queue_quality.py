"""Queue quality under overload: K keys limited upstream to R requests a minute, twice their capacity offered.

Starts a redis-server, the fake upstream and a gateway on loopback, then U
identities offer 2 x K x R requests a minute for a fixed time and wait for
their answers. Reports: share of pool capacity used, upstream 429s,
client-visible errors, Jain's fairness index across identities, and the
estimated wait (read when each request arrives) against the wait it had.

    python3 bench/queue_quality.py --keys 4 --rpm 20 --identities 8 --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


async def offer_load(gateway: str, stats_of: Any, identities: int, rate_per_sec: float, seconds: float,
                     family: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=2000)) as client:

        async def one(i: int) -> None:
            who = f"10.9.0.{i % identities}"
            estimate = (await stats_of()).get(family, {}).get("estimated_wait_sec", 0.0)
            started = time.monotonic()
            reply = await client.post(
                gateway + "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                headers={"x-forwarded-for": who},
            )
            results.append({
                "identity": who, "status": reply.status_code, "estimate_sec": estimate,
                "waited_sec": int(reply.headers.get("x-queue-wait-ms", "0")) / 1000,
                "latency_sec": time.monotonic() - started, "sent_at": started,
            })

        tasks = []
        begin = time.monotonic()
        n = 0
        while time.monotonic() - begin < seconds:
            tasks.append(asyncio.create_task(one(n)))
            n += 1
            await asyncio.sleep(max(0.0, begin + n / rate_per_sec - time.monotonic()))
        await asyncio.gather(*tasks)
    return results


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if any(values) else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=20)
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--overload", type=float, default=2.0, help="offered load / pool capacity")
    args = parser.parse_args()

    redis_bin = shutil.which("redis-server") or sys.exit("needs redis-server (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="poolgate-bench-")
    redis_port, mock_port, gateway_port = free_port(), free_port(), free_port()
    procs = [subprocess.Popen([redis_bin, "--port", str(redis_port), "--save", "", "--dir", workdir],
                              stdout=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(mock_port)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL))
    keys = ",".join(f"sk-bench-rpm{args.rpm}-{i:04d}" for i in range(args.keys))
    env = {**os.environ, "OPENAI_KEY": keys, "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PORT": str(gateway_port), "BIND_ADDRESS": "127.0.0.1",
           "USER_CONCURRENCY_LIMIT": "1000", "QUEUE_TIMEOUT_SEC": "900", "CHECK_KEYS": "false",
           "LOG_LEVEL": "warning"}
    time.sleep(0.5)
    procs.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], cwd=workdir, env=env,
                                  stdout=subprocess.DEVNULL))
    try:
        wait_until_up(f"http://127.0.0.1:{mock_port}/_mock/requests")
        wait_until_up(f"http://127.0.0.1:{gateway_port}/health")

        async def run() -> list[dict[str, Any]]:
            sys.path.insert(0, ROOT)
            import redis.asyncio as redis

            from keypool import KeyPool, PoolSchema
            from queues.waiting import FamilyQueues

            store = redis.Redis.from_url(env["REDIS_URL"])
            pool = KeyPool(store, PoolSchema("poolgate:"), 60)
            queues = FamilyQueues(store, pool, user_concurrency_limit=0, queue_timeout_sec=1,
                                  heartbeat_interval_sec=1, tokens_punishment_factor=0)
            capacity_per_sec = args.keys * args.rpm / 60
            try:
                return await offer_load(f"http://127.0.0.1:{gateway_port}", queues.stats, args.identities,
                                        args.overload * capacity_per_sec, args.seconds, "gpt-4o-mini")
            finally:
                await store.aclose()

        results = asyncio.run(run())
        upstream = httpx.get(f"http://127.0.0.1:{mock_port}/_mock/requests").json()
    finally:
        for proc in reversed(procs):  # the gateway first: it says goodbye to Redis before Redis goes
            proc.terminate()
            proc.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)

    chats = [r for r in upstream if r["path"] == "/v1/chat/completions"]
    window_start = min(r["started_at"] for r in chats)
    minutes = max(1, round(args.seconds / 60))
    in_window = [r for r in chats if r["status"] == 200 and r["started_at"] - window_start < minutes * 60]
    served_per_identity: dict[str, int] = {}
    for r in results:
        if r["status"] == 200:
            served_per_identity[r["identity"]] = served_per_identity.get(r["identity"], 0) + 1
    waited = [r for r in results if r["status"] == 200 and r["waited_sec"] >= 1.0]
    errors = [abs(r["estimate_sec"] - r["waited_sec"]) / r["waited_sec"] for r in waited]
    report = {
        "keys": args.keys, "rpm_per_key": args.rpm, "identities": args.identities, "seconds": args.seconds,
        "offered": len(results),
        "capacity_used": round(len(in_window) / (args.keys * args.rpm * minutes), 3),
        "upstream_requests": len(chats),
        "upstream_429s": sum(1 for r in chats if r["status"] == 429),
        "upstream_429_share": round(sum(1 for r in chats if r["status"] == 429) / max(len(chats), 1), 4),
        "client_errors": sum(1 for r in results if r["status"] != 200),
        "jain_index_served": round(jain(list(served_per_identity.values())), 3),
        "median_wait_sec": round(statistics.median(r["waited_sec"] for r in results), 2),
        "max_wait_sec": round(max(r["waited_sec"] for r in results), 2),
        "median_estimate_error": round(statistics.median(errors), 3) if errors else None,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
