"""Load on loopback: a small HTTP/1.1 client on raw asyncio and httptools.

A general-purpose client (httpx, aiohttp) spends more CPU per request than the
gateway it would measure, so the numbers would be the client's. This one sends
a prepared request's bytes on a kept-alive connection and parses the answer
with the same C parser uvicorn uses; one core drives tens of thousands of
requests a second, far above any target here.

Three shapes of load:
- `closed_loop`: N connections, each sending its next request when the last
  answer is complete (N requests in flight), for a count or a time;
- `stream_one_by_one`: streamed completions one at a time, timing the first
  generated token and the gaps between tokens;
- `many_streams`: N streams opened at once and held to the end, with the
  longest silence each one saw.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

# The first event that carries generated text, in any server's JSON spacing:
# `"content":"Hi"` (OpenAI chat chunk), `"text":"Hi"` (completions, Anthropic deltas).
_TOKEN = re.compile(rb'"(?:content|text)":\s*"[^"]')


def request_bytes(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 POST, ready to write again and again on a kept-alive connection."""
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
             f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(slots=True)
class Answer:
    """One response as the client saw it."""

    status: int = 0
    sent_at: float = 0.0
    done_at: float = 0.0
    token_times: list[float] = field(default_factory=list)  # when each generated-text event arrived

    @property
    def latency(self) -> float:
        return self.done_at - self.sent_at

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.sent_at if self.token_times else None

    def gaps(self) -> list[float]:
        times = self.token_times
        return [later - earlier for earlier, later in itertools.pairwise(times)]


class _Connection(asyncio.Protocol):
    """One kept-alive connection with at most one request outstanding."""

    def __init__(self, watch_tokens: bool) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._watch_tokens = watch_tokens
        self._answer = Answer()
        self._done: asyncio.Future[Answer] | None = None
        self._partial = b""  # the start of an event whose end has not arrived yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError(f"connection closed mid-answer: {exc}"))
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as error:
            if self._done is not None and not self._done.done():
                self._done.set_exception(error)

    def on_body(self, body: bytes) -> None:
        if self._watch_tokens:  # an event counts when its blank line arrives
            now = time.perf_counter()
            events = (self._partial + body.replace(b"\r\n", b"\n")).split(b"\n\n")
            self._partial = events.pop()
            self._answer.token_times.extend(now for event in events if _TOKEN.search(event))

    def on_message_complete(self) -> None:
        self._answer.status = self._parser.get_status_code()
        self._answer.done_at = time.perf_counter()
        if self._done is not None and not self._done.done():
            self._done.set_result(self._answer)

    async def exchange(self, payload: bytes) -> Answer:
        if self._transport is None:
            raise ConnectionError("connection is closed")
        self._answer = Answer(sent_at=time.perf_counter())
        self._partial = b""
        self._done = asyncio.get_running_loop().create_future()
        self._transport.write(payload)
        return await self._done

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(host: str, port: int, *, watch_tokens: bool = False) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: _Connection(watch_tokens), host, port)
    return protocol


@dataclass(slots=True)
class LoadRun:
    """What a closed-loop run measured."""

    in_flight: int
    seconds: float
    latencies: list[float]  # of answers with the expected status, in seconds
    errors: int
    first_error: str = ""

    @property
    def requests_per_sec(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def closed_loop(
    host: str, port: int, payload: bytes, *, in_flight: int, seconds: float, max_requests: int = 0,
    warmup_requests: int = 0,
) -> LoadRun:
    """`in_flight` connections each sending the next request as soon as the last answer is complete.

    Runs for `seconds` (or until `max_requests` answers, good or not, when given) after
    `warmup_requests` per connection that are not counted.
    """
    connections = [await _connect(host, port) for _ in range(in_flight)]
    latencies: list[float] = []
    errors = 0
    first_error = ""
    try:
        for connection in connections:
            for _ in range(warmup_requests):
                await connection.exchange(payload)
        stop_at = time.perf_counter() + seconds
        started = time.perf_counter()

        async def drive(connection: _Connection) -> None:
            nonlocal errors, first_error
            while time.perf_counter() < stop_at and not (max_requests and len(latencies) + errors >= max_requests):
                answer = await connection.exchange(payload)
                if answer.status == 200:
                    latencies.append(answer.latency)
                else:
                    errors += 1
                    first_error = first_error or f"HTTP {answer.status}"

        outcomes = await asyncio.gather(*(drive(c) for c in connections), return_exceptions=True)
        elapsed = time.perf_counter() - started
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                errors += 1
                first_error = first_error or repr(outcome)
    finally:
        for connection in connections:
            connection.close()
    return LoadRun(in_flight, elapsed, latencies, errors, first_error)


@dataclass(slots=True)
class StreamRun:
    """Streams measured one at a time: time to first token and the gaps between tokens."""

    ttfts: list[float]
    gaps: list[float]
    errors: int
    first_error: str = ""


async def stream_one_by_one(host: str, port: int, payload: bytes, *, streams: int, warmup: int = 3) -> StreamRun:
    connection = await _connect(host, port, watch_tokens=True)
    ttfts: list[float] = []
    gaps: list[float] = []
    errors = 0
    first_error = ""
    try:
        for number in range(warmup + streams):
            answer = await connection.exchange(payload)
            if number < warmup:
                continue
            if answer.status != 200 or answer.ttft is None:
                errors += 1
                first_error = first_error or f"HTTP {answer.status}, {len(answer.token_times)} tokens"
                continue
            ttfts.append(answer.ttft)
            gaps.extend(answer.gaps())
    finally:
        connection.close()
    return StreamRun(ttfts, gaps, errors, first_error)


@dataclass(slots=True)
class ManyStreams:
    """N streams held open together."""

    opened: int
    completed: int  # status 200 and every token arrived
    stalled: int  # completed, but some silence between tokens was longer than the stall threshold
    failed: int
    longest_silence: float
    tokens_expected: int
    first_error: str = ""
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, gateway bytes)


async def many_streams(
    host: str, port: int, payload: bytes, *, streams: int, tokens_each: int, stall_after: float,
    sample_memory: Callable[[], int], sample_every: float = 0.25, connect_at_once: int = 100,
) -> ManyStreams:
    """Open `streams` streams together, hold them to the end, and sample the gateway's memory meanwhile."""
    results: list[Answer | BaseException] = []
    samples: list[tuple[float, int]] = []
    started = time.perf_counter()
    running = True

    async def watch_memory() -> None:
        while running:
            samples.append((time.perf_counter() - started, sample_memory()))
            await asyncio.sleep(sample_every)

    gate = asyncio.Semaphore(connect_at_once)  # not a SYN flood: a listen backlog drops beyond its size

    async def one() -> None:
        try:
            async with gate:
                connection = await _connect(host, port, watch_tokens=True)
            try:
                results.append(await connection.exchange(payload))
            finally:
                connection.close()
        except (OSError, httptools.HttpParserError) as error:
            results.append(error)

    watcher = asyncio.create_task(watch_memory())
    await asyncio.gather(*(one() for _ in range(streams)))
    running = False
    await watcher
    samples.append((time.perf_counter() - started, sample_memory()))

    completed = stalled = failed = 0
    longest = 0.0
    first_error = ""
    for result in results:
        if isinstance(result, BaseException) or result.status != 200 or len(result.token_times) < tokens_each:
            failed += 1
            if not first_error:
                first_error = repr(result) if isinstance(result, BaseException) else (
                    f"HTTP {result.status}, {len(result.token_times)} of {tokens_each} tokens")
            continue
        completed += 1
        silence = max([result.ttft or 0.0, *result.gaps()])
        longest = max(longest, silence)
        stalled += silence > stall_after
    return ManyStreams(streams, completed, stalled, failed, longest, tokens_each, first_error, samples)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of a non-empty list: the smallest value with at least
    that share of the values at or below it."""
    ordered = sorted(values)
    rank = math.ceil(share * len(ordered) - 1e-9)  # 0.99 * 100 is 99.00000000000001 in floating point
    return ordered[max(0, min(len(ordered), rank) - 1)]


def summary_ms(values: list[float]) -> dict[str, Any]:
    """p50, p90, p99 and max of durations in seconds, as milliseconds."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 0.50) * 1000, 3),
        "p90_ms": round(percentile(values, 0.90) * 1000, 3),
        "p99_ms": round(percentile(values, 0.99) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3),
    }
