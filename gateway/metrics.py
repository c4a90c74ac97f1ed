"""What `GET /metrics` reports: counted in each process, summed in the store, read whole at scrape time.

Several uvicorn workers, and several machines behind a load balancer, are one gateway, and a scrape
reaches only one of them. So no process reports its own counts: each counts in memory (no store round
trip per request) and adds what it counted to one store hash every FLUSH_INTERVAL_SEC, in one
pipelined round trip; a scrape reads that hash, so whichever process answers reports the whole
deployment, and a process that restarts loses nothing already added. Gauges (keys by state, queue
lengths, leases held) are read from the store at scrape time for the same reason.

Per request the hot path pays a context variable, the response's status noted as it goes out
(`note_response`), and a few dictionary increments under tuple keys when the request ends
(`RequestObserver.serve`); the relay and the upstream client add one call each
per upstream attempt (`note_upstream`, `note_upstream_time`). The store keys (one hash):

    {prefix}metrics   HASH  "<metric>|<label values...>[|<bucket index>|sum|count]" -> running total
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import RedisError

from catalog.families import known_families
from gateway import __version__

log = logging.getLogger("poolgate.requests")

FLUSH_INTERVAL_SEC = 2.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # a histogram when given, else a counter


REQUESTS = MetricSpec("poolgate_requests", "Proxied requests answered, by route, endpoint, model family and status",
                      ("route", "endpoint", "family", "status"))
UPSTREAM = MetricSpec("poolgate_upstream_attempts", "Requests sent upstream, by key id (never its secret) and "
                      "upstream's status (0: no answer); status 429 is the key being rate-limited",
                      ("provider", "key_id", "status"))
QUEUE_WAIT = MetricSpec("poolgate_queue_wait_seconds", "Time served requests waited for a key, by model family",
                        ("family",), WAIT_BUCKETS)
ADDED = MetricSpec("poolgate_added_latency_seconds", "Time the gateway adds before upstream's answer reaches the "
                   "client: the response's start less the queue wait and upstream's own time", ("route",),
                   LATENCY_BUCKETS)
STORE_RTT = MetricSpec("poolgate_store_round_trip_seconds", "Round trips to the store, timed on the metrics' own "
                       "flushes", (), STORE_BUCKETS)
ADMISSIONS = MetricSpec("poolgate_admissions", "Requests of users and limited callers at admission, by model family "
                        "and outcome: `admitted`, or the refusal (`quota`, `limited`, `banned`, `unknown`, ...)",
                        ("family", "outcome"))
RESERVED = MetricSpec("poolgate_reserved_tokens", "Tokens reserved against users' quotas at admission, by model "
                      "family (settlement then corrects each reservation to what upstream reported)", ("family",))
SPECS = {spec.name: spec for spec in (REQUESTS, UPSTREAM, QUEUE_WAIT, ADDED, STORE_RTT, ADMISSIONS, RESERVED)}


class Tally:
    """This process's counts since they were last added to the store.

    Counted under tuple keys, which cost a request no string building; they become the store's
    field names ("<metric>|<labels...>[|<bucket>|sum|count]") only when taken, every flush.
    """

    def __init__(self) -> None:
        self.pending: dict[tuple[str, tuple[str, ...], str], float] = {}
        self._returned: dict[str, float] = {}  # taken but not stored (the store did not answer)

    def count(self, spec: MetricSpec, labels: tuple[str, ...], amount: float = 1.0) -> None:
        key = (spec.name, labels, "")
        pending = self.pending
        pending[key] = pending.get(key, 0.0) + amount

    def observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        pending = self.pending
        bucket = (spec.name, labels, _BUCKET_NAMES[bisect_left(spec.buckets, value)])  # the first bound >= value
        total, count = (spec.name, labels, "sum"), (spec.name, labels, "count")
        pending[bucket] = pending.get(bucket, 0.0) + 1.0
        pending[total] = pending.get(total, 0.0) + value
        pending[count] = pending.get(count, 0.0) + 1.0

    def take(self) -> dict[str, float]:
        taken, self.pending = self.pending, {}
        counts, self._returned = self._returned, {}
        for (name, labels, part), amount in taken.items():
            field = "|".join((name, *labels, part) if part else (name, *labels))
            counts[field] = counts.get(field, 0.0) + amount
        return counts

    def give_back(self, counts: dict[str, float]) -> None:
        for field, amount in counts.items():
            self._returned[field] = self._returned.get(field, 0.0) + amount


_BUCKET_NAMES = tuple(str(i) for i in range(64))


@dataclass(slots=True)
class RequestRecord:
    """What one proxied request did, filled in by the stages as they learn it."""

    tally: Tally  # the app's: the relay and the upstream client reach it through the hooks below
    route: str
    started: float
    family: str = ""
    endpoint: str = ""
    status: int = 0
    responded: float = 0.0
    queue_wait_ms: int | None = None
    key_id: str = ""
    upstream_status: int | None = None
    upstream_sec: float = 0.0


_current: ContextVar[RequestRecord | None] = ContextVar("poolgate_request", default=None)


def note_call(family: str, endpoint: str) -> None:
    """Validation has found what the request is for (pipeline)."""
    record = _current.get()
    if record is not None:
        record.family, record.endpoint = family, endpoint


def note_admission(family: str, outcome: str, reserved_tokens: int = 0) -> None:
    """Admission admitted the request (reserving `reserved_tokens` of a quota) or refused it (admission)."""
    record = _current.get()
    if record is not None:
        record.tally.count(ADMISSIONS, (family, outcome))
        if reserved_tokens:
            record.tally.count(RESERVED, (family,), reserved_tokens)


def note_upstream(provider: str, key_id: str, status: int) -> None:
    """An upstream attempt ended with `status` (0: no answer) on key `key_id` (relay)."""
    record = _current.get()
    if record is not None:
        record.tally.count(UPSTREAM, (provider, key_id, str(status)))
        record.key_id, record.upstream_status = key_id, status


def note_upstream_time(seconds: float) -> None:
    """Upstream took this long to answer one attempt's request with its headers (upstream client)."""
    record = _current.get()
    if record is not None:
        record.upstream_sec += seconds


def note_response(status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """The response's status and headers are going out (gateway/client_link.py)."""
    record = _current.get()
    if record is not None:
        record.status, record.responded = status, time.perf_counter()
        for name, value in headers:
            if name == b"x-queue-wait-ms":
                record.queue_wait_ms = int(value)


class RequestObserver:
    """Wraps each proxied request: counts it, times it, and writes the operator's line when it failed (5xx)."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._running = 0  # requests being served, cleanup included, so shut-down can let them give back
        self._idle: asyncio.Event | None = None  # set when `_running` falls to 0, while shut-down waits

    async def wait_for_requests(self, timeout_sec: float) -> None:
        """Until every proxied request has ended, cleanup included, or `timeout_sec`.

        uvicorn cancels what outlives the grace and moves straight on to the app's shut-down;
        a cancelled request is then still settling its lease and ticket with the store, which
        must stay open until it has.
        """
        if not self._running:
            return
        self._idle = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_sec)

    async def serve(self, pipeline: Any, route: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """`pipeline.handle(route, ...)`, observed. The route label is the kind of base URL the client used.

        The response's status and start are noted by the client link as they go out (`note_response`):
        no wrapped `send`, no task bookkeeping; counting happens once, when the request ends.
        """
        record = RequestRecord(self.tally, "v1" if route.by_model else route.provider, time.perf_counter())
        token = _current.set(record)
        self._running += 1
        try:
            await pipeline.handle(route, scope, receive, send)
        finally:
            _current.reset(token)
            self._running -= 1
            if not self._running and self._idle is not None:
                self._idle.set()
            self.finish(record)

    def finish(self, record: RequestRecord) -> None:
        tally = self.tally
        status = record.status or 499  # nothing was sent: the client left first (nginx's "client closed")
        tally.count(REQUESTS, (record.route, record.endpoint, record.family, str(status)))
        queue_sec = (record.queue_wait_ms or 0) / 1000
        if record.queue_wait_ms is not None and record.family:
            tally.observe(QUEUE_WAIT, (record.family,), queue_sec)
        if record.responded and record.upstream_status is not None:
            added = record.responded - record.started - queue_sec - record.upstream_sec
            tally.observe(ADDED, (record.route,), max(0.0, added))
        if status >= 500:
            upstream = "-" if record.upstream_status is None else str(record.upstream_status or "no answer")
            log.error(
                "request failed: %d on %s %s, family %s, key %s, upstream %s, after %.3f s", status, record.route,
                record.endpoint or "-", record.family or "-", record.key_id or "-", upstream,
                time.perf_counter() - record.started,
            )


def metrics_key(prefix: str) -> str:
    return f"{prefix}metrics"


class MetricsStore:
    """Adds this process's tally to the store's running totals, every FLUSH_INTERVAL_SEC and at shut-down."""

    def __init__(self, store: Any, prefix: str, tally: Tally) -> None:
        self._store, self._key, self._tally = store, metrics_key(prefix), tally
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flush_forever(), name="poolgate-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError):
            await self.flush()

    async def flush(self) -> None:
        counts = self._tally.take()
        if not counts:
            return
        started = time.perf_counter()
        try:
            async with self._store.pipeline(transaction=False) as pipe:
                for field, amount in counts.items():
                    pipe.hincrbyfloat(self._key, field, amount)
                await pipe.execute()
        except (RedisError, OSError):
            self._tally.give_back(counts)  # added next time, once the store answers again
            raise
        self._tally.observe(STORE_RTT, (), time.perf_counter() - started)

    async def totals(self) -> dict[str, float]:
        await self.flush()  # what this process counted so far is in what it reports
        raw = await self._store.hgetall(self._key)
        return {_text(k): float(v) for k, v in raw.items()}

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_SEC)
            try:
                await self.flush()
            except (RedisError, OSError) as error:
                log.warning("metrics: the store did not answer: %s", type(error).__name__)


def render_metrics(totals: dict[str, float], keys: list[dict[str, Any]], queues: dict[str, dict[str, Any]],
                   now_ms: int) -> bytes:
    """The Prometheus text format: the store's running totals, and gauges from the keys and queues just read."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([*_from_totals(totals), *_gauges(keys, queues, now_ms)]))
    return generate_latest(registry)


class _Snapshot(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def _from_totals(totals: dict[str, float]) -> Iterator[Metric]:
    by_metric: dict[str, list[tuple[list[str], float]]] = {}
    for field, value in totals.items():
        name, *rest = field.split("|")
        if name in SPECS:
            by_metric.setdefault(name, []).append((rest, value))
    for name, spec in SPECS.items():
        rows = by_metric.get(name, [])
        if not spec.buckets:
            counter = CounterMetricFamily(name, spec.doc, labels=spec.labels)
            for labels, value in sorted(rows):
                if len(labels) == len(spec.labels):
                    counter.add_metric(labels, value)
            yield counter
            continue
        series: dict[tuple[str, ...], dict[str, float]] = {}
        width = len(spec.labels)
        for parts, value in rows:
            if len(parts) == width + 1:
                series.setdefault(tuple(parts[:width]), {})[parts[width]] = value
        histogram = HistogramMetricFamily(name, spec.doc, labels=spec.labels)
        for values, fields in sorted(series.items()):
            running, buckets = 0.0, []
            for index, bound in enumerate((*spec.buckets, float("inf"))):
                running += fields.get(str(index), 0.0)
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            histogram.add_metric(list(values), buckets, fields.get("sum", 0.0))
        yield histogram


def _gauges(keys: list[dict[str, Any]], queues: dict[str, dict[str, Any]], now_ms: int) -> Iterator[Metric]:
    states = GaugeMetricFamily("poolgate_keys", "Keys in the pool, by provider and state", labels=("provider", "state"))
    counted: dict[tuple[str, str], int] = {}
    leases: dict[str, int] = {}
    for key in keys:
        state = key["status"]
        if state == "cooling_down" and key["cooldown_until_ms"] <= now_ms:
            state = "active"  # the rest is over; it is written back at the next lease
        counted[(key["provider"], state)] = counted.get((key["provider"], state), 0) + 1
        leases[key["provider"]] = leases.get(key["provider"], 0) + key["inflight"]
    for provider in ("openai", "anthropic"):
        for state in ("active", "cooling_down", "over_quota", "revoked", "disabled"):
            states.add_metric([provider, state], counted.get((provider, state), 0))
    yield states
    held = GaugeMetricFamily("poolgate_leases", "Key leases held now (requests being served upstream), all "
                             "gateway processes", labels=("provider",))
    for provider in ("openai", "anthropic"):
        held.add_metric([provider], leases.get(provider, 0))
    yield held
    waiting = GaugeMetricFamily("poolgate_queue_length", "Requests waiting for a key now, by model family",
                                labels=("family",))
    # Every family, waited for or not, so a dashboard's line starts at 0 rather than nowhere.
    for family in sorted({*known_families("openai"), *known_families("anthropic"), *queues}):
        waiting.add_metric([family], queues.get(family, {}).get("in_queue", 0))
    yield waiting
    info = GaugeMetricFamily("poolgate_info", "The running poolgate's version", labels=("version",))
    info.add_metric([__version__], 1)
    yield info


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
