"""The benchmark suite's own parts: its load generator against the fake upstream, its statistics, its report.

The whole suite runs in CI as `python3 -m bench --smoke`; these catch a wrong
number before it reaches a report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from bench.load import closed_loop, many_streams, percentile, request_bytes, stream_one_by_one, summary_ms
from bench.queue_quality import jain
from bench.report import checks, markdown, problems
from fake_upstream import run_mock_upstream_in_thread


@pytest.fixture
def paced_upstream() -> Iterator[Any]:
    handle = run_mock_upstream_in_thread(tokens_per_sec=200, output_tokens=5)
    yield handle
    handle.stop()


def _chat(port: int, key: str = "sk-bench-0001", **extra: Any) -> bytes:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}).encode()
    return request_bytes("127.0.0.1", port, "/v1/chat/completions", body, {"authorization": f"Bearer {key}"})


async def test_the_closed_loop_counts_answers_and_errors(upstream: Any) -> None:
    run = await closed_loop("127.0.0.1", upstream.port, _chat(upstream.port), in_flight=4, seconds=5,
                            max_requests=200)
    assert run.errors == 0 and len(run.latencies) >= 200
    assert len([r for r in upstream.requests if r["path"] == "/v1/chat/completions"]) == len(run.latencies)
    refused = await closed_loop("127.0.0.1", upstream.port, _chat(upstream.port, key="sk-revoked-1"), in_flight=2,
                                seconds=5, max_requests=10)
    assert refused.latencies == [] and refused.errors >= 10 and refused.first_error == "HTTP 401"


async def test_streams_are_timed_token_by_token(paced_upstream: Any) -> None:
    run = await stream_one_by_one("127.0.0.1", paced_upstream.port, _chat(paced_upstream.port, stream=True),
                                  streams=3, warmup=0)
    assert run.errors == 0 and len(run.ttfts) == 3
    assert all(ttft >= 0.004 for ttft in run.ttfts)  # the first token comes one 5 ms interval after the head
    assert len(run.gaps) == 3 * 4  # five tokens, four gaps, in each stream
    assert 0.002 < sorted(run.gaps)[len(run.gaps) // 2] < 0.05


async def test_many_streams_reports_each_one_complete(paced_upstream: Any) -> None:
    run = await many_streams("127.0.0.1", paced_upstream.port, _chat(paced_upstream.port, stream=True), streams=20,
                             tokens_each=5, stall_after=1.0, sample_memory=lambda: 1, sample_every=0.01)
    assert (run.completed, run.failed, run.stalled) == (20, 0, 0)
    short = await many_streams("127.0.0.1", paced_upstream.port, _chat(paced_upstream.port, stream=True), streams=3,
                               tokens_each=6, stall_after=1.0, sample_memory=lambda: 1)
    assert short.failed == 3 and "5 of 6 tokens" in short.first_error


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99 and percentile(values, 1.0) == 100
    assert percentile([3.0], 0.99) == 3.0
    assert summary_ms([0.001, 0.002, 0.003])["p50_ms"] == 2.0


def test_jain_index() -> None:
    assert jain([5, 5, 5, 5]) == 1.0
    assert jain([8, 0, 0, 0]) == 0.25


def _report(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "mode": "full", "command": "python3 -m bench", "started_at": "now", "duration_sec": 1.0,
        "machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "kernel": "k", "python": "3.11", "redis_server": "7",
                    "packages": {}},
        "cores": {"server": 0, "everything_else": 1},
        "non_streaming": {
            "targets": {
                "upstream": _measured(20000, 0.05, 0.1),
                "bare_relay": _measured(4000, 0.6, 1.0),
                "poolgate": _measured(3000, 0.8, 1.4),
                "litellm": {"skipped": "could not be installed"},
            },
            "added_ms": {"poolgate": {"in_flight_1": {"p50": 0.75, "p99": 1.3}}},
        },
    }
    report.update(overrides)
    return report


def _measured(rps: float, p50: float, p99: float, errors: int = 0) -> dict[str, Any]:
    latency = {"count": 100, "p50_ms": p50, "p90_ms": p50, "p99_ms": p99, "max_ms": p99}
    return {"requests_per_sec": rps, "in_flight_1": latency, "in_flight_32": latency, "errors": errors,
            "first_error": "HTTP 502" if errors else "", "memory_mb": 70.0, "cpu_us_per_request": 1e6 / rps}


def test_targets_are_judged_from_the_numbers() -> None:
    found = {check.name: check for check in checks(_report())}
    assert found["throughput vs bare relay"].met is True and found["throughput vs bare relay"].measured == "75%"
    assert found["throughput vs LiteLLM"].met is None  # skipped, so not measured
    assert found["added latency, 1 in flight, p99"].met is True
    slow = _report()
    slow["non_streaming"]["targets"]["poolgate"]["requests_per_sec"] = 2000
    assert {c.name: c.met for c in checks(slow)}["throughput vs bare relay"] is False


def test_errors_and_missing_measurements_are_problems() -> None:
    assert problems(_report()) == []
    broken = _report()
    broken["non_streaming"]["targets"]["poolgate"] = _measured(3000, 0.8, 1.4, errors=3)
    broken["non_streaming"]["targets"]["bare_relay"]["in_flight_1"] = {"count": 0}
    found = problems(broken)
    assert any("poolgate answered 3 errors (HTTP 502)" in p for p in found)
    assert any("bare_relay has no successful measurement" in p for p in found)


def test_the_markdown_report_shows_every_measured_server_and_why_one_was_skipped() -> None:
    text = markdown(_report(), "report.png")
    assert "| poolgate, 1 worker | 3,000 | 333 |" in text
    assert "poolgate 333 µs, bare relay 250 µs (bare relay / poolgate = 75%)" in text
    assert "skipped: could not be installed" in text
    assert "![throughput" in text and "| throughput vs bare relay | ≥ 55% | 75% | yes |" in text

