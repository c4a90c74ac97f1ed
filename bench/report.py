"""The suite's report: the machine, every measurement, and each target met or not, as Markdown, JSON and PNG."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


def describe_machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        memory_kb = 0
    versions = {}
    for package in ("litestar", "httpx", "httpx-aiohttp", "aiohttp", "uvicorn", "uvloop", "redis", "msgspec"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        redis_server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                      check=False).stdout.split()[2].removeprefix("v=")
    except (OSError, IndexError):
        redis_server = "not installed"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(), "redis_server": redis_server,
        "packages": versions,
    }


@dataclass(frozen=True)
class Check:
    """One target from the issue, and where this run stands against it."""

    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run


def _get(report: dict[str, Any], *path: str) -> Any:
    value: Any = report
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def _check(name: str, target: str, value: Any, good: Callable[[Any], bool], shown: Callable[[Any], str]) -> Check:
    if value is None:
        return Check(name, target, "not measured", None)
    return Check(name, target, shown(value), bool(good(value)))


def cpu_comparison(report: dict[str, Any]) -> str | None:
    """poolgate's CPU per answer against the bare relay's, the throughput ratio a quiet machine would show."""
    cpu = {name: _get(report, "non_streaming", "targets", name, "cpu_us_per_request")
           for name in ("poolgate", "bare_relay")}
    if not cpu["poolgate"] or not cpu["bare_relay"]:
        return None
    return (f"CPU per request at 32 in flight: poolgate {cpu['poolgate']:,.0f} µs, bare relay {cpu['bare_relay']:,.0f}"
            f" µs (bare relay / poolgate = {cpu['bare_relay'] / cpu['poolgate']:.0%})")


def checks(report: dict[str, Any]) -> list[Check]:
    rps = {name: _get(report, "non_streaming", "targets", name, "requests_per_sec")
           for name in ("bare_relay", "poolgate", "litellm")}
    vs_bare = rps["poolgate"] / rps["bare_relay"] if rps["poolgate"] and rps["bare_relay"] else None
    vs_litellm = rps["poolgate"] / rps["litellm"] if rps["poolgate"] and rps["litellm"] else None
    added_1 = _get(report, "non_streaming", "added_ms", "poolgate", "in_flight_1") or {}
    ttft = _get(report, "streaming", "added_ms", "poolgate", "ttft") or {}
    held = report.get("many_streams")
    queue = report.get("queue")
    accounts = report.get("accounts")
    budgets = report.get("budgets")
    pool = report.get("pool_size")
    ms = "{:.2f} ms".format
    return [
        _check("throughput vs bare relay", "≥ 55%", vs_bare, lambda v: v >= 0.55, "{:.0%}".format),
        _check("throughput vs LiteLLM", "≥ 25×", vs_litellm, lambda v: v >= 25, "{:.1f}×".format),
        _check("added latency, 1 in flight, p50", "≤ 1.5 ms", added_1.get("p50"), lambda v: v <= 1.5, ms),
        _check("added latency, 1 in flight, p99", "≤ 5 ms", added_1.get("p99"), lambda v: v <= 5, ms),
        _check("streaming: added time to first token, p50", "≤ 3 ms", ttft.get("p50"), lambda v: v <= 3, ms),
        _check(f"{held['streams'] if held else 1000} concurrent streams: peak memory", "< 300 MB",
               held and held["peak_memory_mb"], lambda v: v < 300, "{:.0f} MB".format),
        _check("concurrent streams: stalled or failed", "none",
               held and held["stalled"] + held["failed"], lambda v: v == 0, str),
        _check("queue: pool capacity used", "≥ 95%", queue and queue["capacity_used"], lambda v: v >= 0.95,
               "{:.0%}".format),
        _check("queue: upstream 429s", "≤ 1% of requests", queue and queue["upstream_429_share"],
               lambda v: v <= 0.01, "{:.1%}".format),
        _check("queue: client-visible errors", "none", queue and queue["client_errors"], lambda v: v == 0, str),
        _check("queue: Jain's fairness index", "≥ 0.95", queue and queue["jain_index_served"],
               lambda v: v >= 0.95, "{:.3f}".format),
        _check("queue: median estimated-wait error", "≤ 25%", queue and queue["median_estimate_error"],
               lambda v: v <= 0.25, "{:.1%}".format),
        _check("user tokens + limiter + quota: throughput vs plain poolgate", "≥ 85%", accounts and accounts["ratio"],
               lambda v: v >= 0.85, "{:.0%}".format),
        _check("pool size: 2,000 keys' throughput vs 2 keys'", "≥ 80%", pool and pool["ratio"],
               lambda v: v >= 0.80, "{:.0%}".format),
        _check("monthly budgets on: throughput vs off", "≥ 85%", budgets and budgets["ratio"],
               lambda v: v >= 0.85, "{:.0%}".format),
    ]


def problems(report: dict[str, Any]) -> list[str]:
    """What says the suite itself did not work: errors where there should be none, missing measurements."""
    found = []
    for phase in ("non_streaming", "streaming"):
        for name, result in (_get(report, phase, "targets") or {}).items():
            if "skipped" in result:
                continue
            if result.get("errors"):
                found.append(f"{phase}: {name} answered {result['errors']} errors ({result.get('first_error')})")
            counted = result.get("in_flight_1", result.get("ttft", {})).get("count")
            if not counted:
                found.append(f"{phase}: {name} has no successful measurement")
    held = report.get("many_streams")
    if held and held["failed"]:
        found.append(f"many streams: {held['failed']} failed ({held['first_error']})")
    for size, result in (_get(report, "pool_size", "sizes") or {}).items():
        if result["errors"] or not result["requests_per_sec"]:
            found.append(f"pool size {size}: {result['errors']} errors ({result['first_error']})")
    for phase in ("accounts", "budgets"):
        for name, result in (_get(report, phase, "targets") or {}).items():
            if result["errors"] or not result["requests_per_sec"]:
                found.append(f"{phase}: {name} answered {result['errors']} errors ({result['first_error']})")
    limited = report.get("queue_concurrency")
    if limited and (limited["client_errors"] or not limited["offered"]):
        found.append(f"queue with concurrency-limited keys: {limited['client_errors']} client errors")
    for row, result in (_get(report, "translation", "rows") or {}).items():
        if result["errors"] or not result["in_flight_1"].get("count") or not result["ttft"].get("count"):
            found.append(f"translation: {row} answered {result['errors']} errors ({result['first_error']})")
    queue = report.get("queue")
    if queue and (queue["client_errors"] or not queue["offered"]):
        found.append(f"queue: {queue['client_errors']} client errors of {queue['offered']} requests")
    return found


# --- Markdown -------------------------------------------------------------------------------------------

NAMES = {"upstream": "fake upstream, direct", "bare_relay": "bare relay (Litestar + same client)",
         "poolgate": "poolgate, 1 worker", "poolgate_2_workers": "poolgate, 2 workers, one Redis",
         "litellm": "LiteLLM proxy"}


SHORT_NAMES = {"bare_relay": "bare relay", "poolgate": "poolgate", "poolgate_2_workers": "poolgate, 2 workers",
               "litellm": "LiteLLM"}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _ms(summary: dict[str, Any] | None, quantile: str) -> str:
    return f"{summary[quantile + '_ms']:.2f}" if summary and summary.get("count") else "–"


def markdown(report: dict[str, Any], plot_name: str | None) -> str:
    machine = report["machine"]
    lines = [
        f"# poolgate benchmark ({report['mode']} run)", "",
        f"Run {report['started_at']} in {report['duration_sec']:.0f} s with `{report['command']}`.", "",
        f"**Machine:** {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, Linux "
        f"{machine['kernel']}, Python {machine['python']}, redis-server {machine['redis_server']}; "
        + ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
        + (f", LiteLLM {report['litellm_version']}" if report.get("litellm_version") else "") + ".", "",
        _placement(report), "",
        "## Targets", "",
        *(["A smoke run: its counts are seconds' worth, too few to judge any target by.", ""]
          if report["mode"] == "smoke" else []),
        *_table(["measure", "target", "this run", "met"],
                [[c.name, c.target, c.measured, {True: "yes", False: "**no**", None: "–"}[c.met]]
                 for c in checks(report)]),
        "",
    ]
    if plot_name:
        lines += [f"![throughput, added latency, streaming and memory]({plot_name})", ""]
    lines += _non_streaming_section(report.get("non_streaming"))
    lines += _streaming_section(report.get("streaming"))
    lines += _many_streams_section(report.get("many_streams"))
    lines += _queue_section(report.get("queue"))
    lines += _concurrency_section(report.get("queue_concurrency"))
    lines += _pool_size_section(report.get("pool_size"))
    lines += _accounts_section(report.get("accounts"))
    lines += _budgets_section(report.get("budgets"))
    lines += _token_counting_section(report.get("token_counting"))
    lines += _translation_section(report.get("translation"))
    found = problems(report)
    if found:
        lines += ["## Problems", "", *(f"- {problem}" for problem in found), ""]
    return "\n".join(lines)


TRANSLATION_ROWS = {"openai_to_gpt": "OpenAI format → GPT (native)",
                    "anthropic_to_claude": "Anthropic format → Claude (native)",
                    "openai_to_claude": "OpenAI format → Claude (translated)",
                    "anthropic_to_gpt": "Anthropic format → GPT (translated)"}


def _translation_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    rows = []
    for name, result in phase["rows"].items():
        added = phase["added_ms"].get(name, {})
        rows.append([
            TRANSLATION_ROWS.get(name, name), f"{result['requests_per_sec']:,.0f}",
            _ms(result["in_flight_1"], "p50"), _ms(result["in_flight_1"], "p99"),
            _ms(result["ttft"], "p50"), _ms(result["gap"], "p50"),
            " / ".join(f"{added[m]['p50']:+.2f}" for m in ("in_flight_1", "ttft") if m in added) or "–",
            str(result["errors"]),
        ])
    return [
        "## Translation", "",
        "The same chat turn through one poolgate, native and translated. Added = a translated row's p50 minus "
        "that of the native row reaching the same upstream API (whole reply @1 / time to first token); "
        f"streams carry {phase['tokens_per_stream']} tokens at {phase['tokens_per_sec']:g} a second.", "",
        *_table(["call", "requests/s @32", "p50 @1", "p99 @1", "TTFT p50", "gap p50", "added ms @1 / TTFT",
                 "errors"], rows),
        "",
    ]


def _placement(report: dict[str, Any]) -> str:
    cores = report.get("cores") or {}
    if cores.get("server") is None:
        return ("Only one core was available, so the server under test shared it with the load generator, "
                "the fake upstream and Redis.")
    return (f"Each server under test ran alone on core {cores['server']}; the load generator, the fake upstream "
            f"and redis-server shared core {cores['everything_else']}. The two-worker poolgate ran both workers on "
            f"core {cores['server']} too: on a two-core machine, workers spread over both cores would take the load "
            "generator's core and measure the contention, so this row shows what coordinating two processes "
            "through one Redis costs, not how far more cores go.")


def _non_streaming_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    targets = phase["targets"]
    rows = []
    for name, result in targets.items():
        if "skipped" in result:
            rows.append([NAMES.get(name, name), f"skipped: {result['skipped']}", *["–"] * 8])
            continue
        added = phase["added_ms"].get(name, {})
        one, many = result["in_flight_1"], result["in_flight_32"]
        rows.append([
            NAMES.get(name, name), f"{result['requests_per_sec']:,.0f}",
            f"{cpu:,.0f}" if (cpu := result.get("cpu_us_per_request")) else "–", _ms(one, "p50"), _ms(one, "p99"),
            _ms(many, "p50"), _ms(many, "p99"),
            " / ".join(f"{added[m]['p50']:+.2f}, {added[m]['p99']:+.2f}" for m in ("in_flight_1", "in_flight_32")
                       if m in added) or "–",
            str(result["errors"]), f"{result['memory_mb']:.0f} MB",
        ])
    return [
        "## Non-streaming chat completions", "",
        "Requests per second at 32 in flight (median of the rounds); the server's own CPU time (user and system, "
        "its processes together) per answer at 32 in flight (median of the rounds), which holds still when other "
        "work shares the machine and requests/s does not; latency of the whole round trip in ms; "
        "added = p50, p99 minus the fake upstream's own, at 1 / 32 in flight.", "",
        *_table(["server", "requests/s", "CPU µs/request", "p50 @1", "p99 @1", "p50 @32", "p99 @32",
                 "added ms @1 / @32", "errors", "memory after"], rows),
        "",
        *([comparison + ".", ""] if (comparison := cpu_comparison({"non_streaming": phase})) else []),
    ]


def _streaming_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    rows = []
    for name, result in phase["targets"].items():
        if "skipped" in result:
            rows.append([NAMES.get(name, name), f"skipped: {result['skipped']}", *["–"] * 5])
            continue
        added = phase["added_ms"].get(name, {})
        rows.append([
            NAMES.get(name, name), _ms(result["ttft"], "p50"), _ms(result["ttft"], "p99"),
            _ms(result["gap"], "p50"), _ms(result["gap"], "p99"),
            " / ".join(f"{added[m]['p50']:+.2f}" for m in ("ttft", "gap") if m in added) or "–",
            str(result["errors"]),
        ])
    return [
        "## Streaming", "",
        f"One stream at a time, {phase['tokens_per_stream']} tokens paced by the fake upstream at "
        f"{phase['tokens_per_sec']:g} a second. Time to first token counts from sending the request to the "
        "first event that carries text; gaps are between consecutive text events.", "",
        *_table(["server", "TTFT p50", "TTFT p99", "gap p50", "gap p99", "added ms TTFT / gap (p50)", "errors"],
                rows),
        "",
    ]


def _many_streams_section(held: dict[str, Any] | None) -> list[str]:
    if not held:
        return []
    return [
        "## Concurrent slow streams", "",
        f"{held['streams']} streams opened together through poolgate (1 worker), each {held['tokens_each']} tokens "
        f"over {held['seconds_each']:g} s. Memory is poolgate's resident set.", "",
        *_table(["completed", "stalled (silence > {:g} s)".format(held["stall_threshold_sec"]), "failed",
                 "longest silence", "memory idle", "memory peak"],
                [[str(held["completed"]), str(held["stalled"]), str(held["failed"]),
                  f"{held['longest_silence_sec']:.2f} s", f"{held['idle_memory_mb']:.0f} MB",
                  f"{held['peak_memory_mb']:.0f} MB"]]),
        "",
    ]


def _queue_section(queue: dict[str, Any] | None) -> list[str]:
    if not queue:
        return []
    error = queue["median_estimate_error"]
    return [
        "## Queue quality", "",
        f"{queue['keys']} keys, each limited by the fake upstream to {queue['rpm_per_key']} requests a minute; "
        f"{queue['identities']} identities offer {queue['overload']:g}× the pool's capacity for "
        f"{queue['seconds']:g} s ({queue['offered']} requests) and wait for their answers.", "",
        *_table(["capacity used", "upstream 429s", "client errors", "Jain's index", "median wait", "max wait",
                 "median estimate error"],
                [[f"{queue['capacity_used']:.0%}", f"{queue['upstream_429s']} of {queue['upstream_requests']}",
                  str(queue["client_errors"]), f"{queue['jain_index_served']:.3f}", f"{queue['median_wait_sec']} s",
                  f"{queue['max_wait_sec']} s",
                  f"{error:.1%} (of {queue['waits_estimated']} waits ≥ 1 s)" if error is not None else "–"]]),
        "",
    ]


def _concurrency_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    return [
        "## Queue with concurrency-limited keys", "",
        f"{phase['keys']} keys the upstream lets take one request at a time ({phase['latency_sec']} s each, "
        f"a 429 for any more); {phase['identities']} identities offer {phase['overload']:g}× the capacity for "
        f"{phase['seconds']:g} s ({phase['offered']} requests).", "",
        *_table(["capacity used", "upstream 429s", "client errors", "median wait"],
                [[f"{phase['capacity_used']:.0%}", f"{phase['upstream_429s']} of {phase['upstream_requests']}",
                  str(phase["client_errors"]), f"{phase['median_wait_sec']} s"]]),
        "",
    ]


def _pool_size_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    small, large = phase["ratio_of"]
    return [
        "## Pool size", "",
        "poolgate, 1 worker on one core, real Redis, 16 connections; the status snapshot and the admin key "
        "list are read whole (median of 3).", "",
        *_table(["keys", "requests/s", "errors", "GET /status", "GET /admin/keys"],
                [[f"{r['keys']:,}", f"{r['requests_per_sec']:,.0f}", str(r["errors"]), f"{r['status_ms']} ms",
                  f"{r['admin_keys_ms']} ms ({r['admin_keys_bytes'] / 2**20:.1f} MB)"]
                 for r in phase["sizes"].values()]),
        "", f"{large:,} keys serve {phase['ratio']:.0%} of the requests/s of {small:,} keys.", "",
    ]


def _accounts_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    names = {"poolgate": "poolgate, `GATEKEEPER=proxy_key`",
             "poolgate_user_token": "poolgate, `GATEKEEPER=user_token`, rate limiter and quota on"}
    return [
        "## Accounts on the hot path", "",
        "Both gateways 1 worker on the same core, same Redis, 32 in flight, interleaved rounds (median).", "",
        *_table(["server", "requests/s", "CPU µs/request", "p50 @32", "p99 @32", "errors"],
                [[names.get(name, name), f"{r['requests_per_sec']:,.0f}", _cpu(r.get("cpu_us_per_request")),
                  _ms(r["in_flight_32"], "p50"), _ms(r["in_flight_32"], "p99"), str(r["errors"])]
                 for name, r in phase["targets"].items()]),
        "", f"With user tokens, the limiter and a quota: {phase['ratio']:.0%} of the plain gateway's requests/s"
        + (f", {phase['cpu_ratio']:.0%} by CPU per request (plain / users), the figure that holds still while "
           "other work shares the machine." if phase.get("cpu_ratio") else ".") if phase["ratio"] else "", "",
    ]


def _budgets_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    names = {"budgets_off": "poolgate, user tokens, no budget", "budgets_on": "poolgate, user tokens, a monthly budget"}
    return [
        "## Monthly budgets on the hot path", "",
        "Both gateways 1 worker on the same core, same Redis, 32 in flight, interleaved rounds (median).", "",
        *_table(["server", "requests/s", "p50 @32", "p99 @32", "errors"],
                [[names.get(name, name), f"{r['requests_per_sec']:,.0f}", _ms(r["in_flight_32"], "p50"),
                  _ms(r["in_flight_32"], "p99"), str(r["errors"])] for name, r in phase["targets"].items()]),
        "", f"With a monthly budget: {phase['ratio']:.0%} of the same gateway's requests/s without one."
        if phase["ratio"] else "", "",
    ]


def _cpu(value: float | None) -> str:
    return f"{value:,.0f}" if value else "–"


def _token_counting_section(phase: dict[str, Any] | None) -> list[str]:
    if not phase:
        return []
    rows = []
    for r in phase.values():
        speed = r["speed"]
        rows.append([
            f"{speed['tokens']:,}", f"{r['body_bytes']:,}", _ms(r["counting_off"]["in_flight_1"], "p50"),
            _ms(r["counting_on"]["in_flight_1"], "p50"), f"+{r['added_p50_ms']:.2f}",
            f"{speed['poolgate_tokens_per_sec'] / 1e6:.1f} M", f"{speed['tiktoken_tokens_per_sec'] / 1e6:.1f} M",
            f"{speed['ratio_to_tiktoken']:.0%}",
        ])
    return [
        "## Token counting", "",
        "One chat request at a time through poolgate (1 worker), counting on (`COUNT_PROMPT_TOKENS=true`, the "
        "default) and off; counting's own speed against tiktoken's `encode` on the same text, in one process.", "",
        *_table(["prompt tokens", "body bytes", "p50 off", "p50 on", "added ms", "tokens/s counted",
                 "tiktoken tokens/s", "of tiktoken"], rows),
        "",
    ]


# --- PNG ------------------------------------------------------------------------------------------------

def plot(report: dict[str, Any], path: Path) -> str | None:
    """Draw the run into a PNG; a reason instead when matplotlib is missing (`pip install -e '.[bench]'`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    non_streaming = (report.get("non_streaming") or {}).get("targets", {})
    measured = {n: r for n, r in non_streaming.items() if "skipped" not in r and n != "upstream"}
    names = [SHORT_NAMES.get(n, n) for n in measured]
    bars = axes[0][0].bar(names, [r["requests_per_sec"] for r in measured.values()], color="#4c72b0")
    axes[0][0].bar_label(bars, fmt="%.0f")
    axes[0][0].set_title("Requests per second, 32 in flight (server on one core)")
    added = (report.get("non_streaming") or {}).get("added_ms", {})
    positions = range(len(measured))
    for offset, (quantile, colour) in enumerate((("p50", "#55a868"), ("p99", "#c44e52"))):
        values = [added.get(n, {}).get("in_flight_1", {}).get(quantile, 0) for n in measured]
        axes[0][1].bar([p + offset * 0.4 for p in positions], values, width=0.4, label=quantile, color=colour)
    axes[0][1].set_xticks([p + 0.2 for p in positions], names)
    axes[0][1].set_yscale("symlog", linthresh=1)
    axes[0][1].set_title("Added latency at 1 in flight (ms)")
    axes[0][1].legend()
    streaming = (report.get("streaming") or {}).get("added_ms", {})
    stream_names = list(streaming)
    axes[1][0].bar([SHORT_NAMES.get(n, n) for n in stream_names],
                   [streaming[n].get("ttft", {}).get("p50", 0) for n in stream_names], color="#8172b2")
    axes[1][0].set_title("Streaming: added time to first token, p50 (ms)")
    held = report.get("many_streams")
    if held:
        times, megabytes = zip(*held["memory_samples"], strict=True)
        axes[1][1].plot(times, megabytes, color="#dd8452")
        axes[1][1].axhline(300, linestyle="--", color="grey", label="300 MB target")
        axes[1][1].set_ylim(bottom=0)
        axes[1][1].legend()
        axes[1][1].set_title(f"poolgate memory (MB) during {held['streams']} concurrent streams")
        axes[1][1].set_xlabel("seconds")
    for row in axes:
        for axis in row:
            axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def write(report: dict[str, Any], directory: Path, name: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    png = directory / f"{name}.png"
    missing_plot = plot(report, png)
    if missing_plot:
        report["plot"] = missing_plot
    written = [directory / f"{name}.json", directory / f"{name}.md"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    written[1].write_text(markdown(report, None if missing_plot else png.name))
    return written if missing_plot else [*written, png]
