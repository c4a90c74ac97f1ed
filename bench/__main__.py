"""Run the benchmark suite: `python3 -m bench` (full, ~10 min) or `python3 -m bench --smoke` (~35 s).

Starts everything it needs on loopback (redis-server, the fake upstream,
poolgate, the bare relay, LiteLLM's proxy in its own virtual environment),
measures, and writes `<out>/<name>.md`, `.json` and `.png`. The smoke run
checks that the suite works, not how fast anything is: it exits non-zero only
when a measurement could not be taken or a server answered errors.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench import report as reporting
from bench.suite import FULL, SMOKE, run_suite

PHASES = ("non_streaming", "streaming", "many_streams", "queue", "queue_concurrency", "pool_size", "accounts",
          "token_counting", "translation", "budgets")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="seconds and tiny counts: check the suite works")
    parser.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES), help="run only these phases")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out of the comparison")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="folder for the report")
    parser.add_argument("--name", default="report", help="file name of the report, without extension")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "poolgate-bench",
                        help="where LiteLLM's virtual environment is kept between runs")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[bench {time.monotonic() - began:6.1f}s] {message}", flush=True)

    began = time.monotonic()
    command = "python3 -m bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    result: dict[str, Any] = {
        "mode": "smoke" if args.smoke else "full", "command": command,
        "started_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": reporting.describe_machine(),
    }
    result.update(run_suite(SMOKE if args.smoke else FULL, litellm=not args.no_litellm, only=set(args.only),
                            cache_dir=args.cache, log=log))
    result["duration_sec"] = round(time.monotonic() - began, 1)
    for path in reporting.write(result, args.out, args.name):
        log(f"wrote {path}")
    if args.smoke:
        log("smoke run: the suite works; its counts are too small to judge the targets (see the report)")
    else:
        for check in reporting.checks(result):
            if check.met is not None:
                log(f"{'met   ' if check.met else 'MISSED'} {check.name}: {check.measured} (target {check.target})")
    comparison = reporting.cpu_comparison(result)
    if comparison:
        log(comparison)
    found = reporting.problems(result)
    for problem in found:
        log(f"PROBLEM {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
