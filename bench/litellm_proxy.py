"""Install, configure and start LiteLLM's proxy as the point of comparison for poolgate's benchmarks.

LiteLLM lives in its own virtual environment, apart from poolgate's packages,
created once under a cache directory and re-used while it holds the version
measured. The configuration mirrors what poolgate is asked to do:
one model served through a pool of upstream keys, callers authenticated by
one shared key. It keeps LiteLLM's normal auth, routing and usage accounting
and turns off only what poolgate does not do either: a per-request access log,
debug output, and spend/error logs that would need a database. Startup never
touches the network: the model cost map and the other data files LiteLLM can
fetch from GitHub are read from the copies bundled in the package.

Without a database LiteLLM rejects a wrong key with 400 "No connected db."
rather than 401, and answers a request with no key at all with 500 unless the
`prisma` package happens to be installed (litellm[proxy] does not bring it).

    python = ensure_venv(cache_dir)               # a path, or a reason it could not be installed
    config = write_config(work_dir, "http://127.0.0.1:8931", keys, "gpt-4o", "sk-bench-master")
    argv, env = command(python, config, port)     # then poll wait_ready_path() until it answers 200
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO

LITELLM_REQUIREMENT = "litellm[proxy]==1.106.2"  # pinned: the version measured
LITELLM_VERSION = LITELLM_REQUIREMENT.split("==", 1)[1]

VENV_NAME = "litellm-venv"
INSTALL_LOG_NAME = "litellm-install.log"
INSTALL_TIMEOUT_SECONDS = 600  # venv creation and pip together
VERSION_TIMEOUT_SECONDS = 60

# Reads the installed distribution's metadata without importing litellm (which is slow to import).
_VERSION_SCRIPT = "import importlib.metadata as m; print(m.version('litellm'))"

# Starts the same entry point as the `litellm` console script, found through the interpreter alone.
_RUN_SERVER_SCRIPT = "import sys; from litellm import run_server; sys.exit(run_server())"


def venv_python(venv: pathlib.Path) -> pathlib.Path:
    """The interpreter of a virtual environment made by `python -m venv` (POSIX layout)."""
    return venv / "bin" / "python"


def version_of(python: pathlib.Path | str) -> str | None:
    """The litellm version installed for `python`, or None if there is no such interpreter or no litellm."""
    try:
        done = subprocess.run(
            [str(python), "-c", _VERSION_SCRIPT],
            capture_output=True, text=True, timeout=VERSION_TIMEOUT_SECONDS, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else None


def _run_logged(argv: list[str], out: IO[str], timeout: float) -> int | None:
    """Run argv with its output appended to `out`; its exit status, or None if it ran out of time (then killed)."""
    out.write(f"$ {shlex.join(argv)}\n")
    out.flush()
    # A session of its own, so a timeout also ends whatever pip started (build backends, compilers).
    process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return process.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


def ensure_venv(cache_dir: pathlib.Path, log: Callable[[str], None] = print) -> pathlib.Path | str:
    """Create (once) a virtual environment at cache_dir/'litellm-venv' with LITELLM_REQUIREMENT installed.

    Returns its python executable. If it cannot be installed (pip fails, no network, timeout ~10 min),
    returns a one-line human-readable reason instead; it never raises for that. An existing venv is
    re-used when its litellm is the pinned version and rebuilt otherwise. The output of `python -m venv`
    and of that venv's pip goes to cache_dir/'litellm-install.log', which the reason names.
    """
    venv = cache_dir / VENV_NAME
    python = venv_python(venv)
    found = version_of(python)
    if found == LITELLM_VERSION:
        return python
    if venv.exists():
        log(f"rebuilding {venv}: it holds litellm {found or '(none)'}, the benchmark measures {LITELLM_VERSION}")
        shutil.rmtree(venv, ignore_errors=True)

    cache_dir.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir / INSTALL_LOG_NAME
    log(f"installing {LITELLM_REQUIREMENT} into {venv} (about a minute; output in {log_path})")
    pip_install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LITELLM_REQUIREMENT]
    steps = [
        ("create a virtual environment", [sys.executable, "-m", "venv", str(venv)]),
        (f"install {LITELLM_REQUIREMENT}", pip_install),
    ]
    deadline = time.monotonic() + INSTALL_TIMEOUT_SECONDS
    reason = None
    with log_path.open("w", encoding="utf-8") as out:
        for what, argv in steps:
            try:
                status = _run_logged(argv, out, deadline - time.monotonic())
            except OSError as error:
                reason = f"could not {what}: {error} (see {log_path})"
                break
            if status is None:
                reason = f"could not {what}: gave up after {INSTALL_TIMEOUT_SECONDS} s (see {log_path})"
                break
            if status != 0:
                reason = f"could not {what}: it exited with status {status} (see {log_path})"
                break
    if reason is None:
        found = version_of(python)
        if found == LITELLM_VERSION:
            log(f"installed {LITELLM_REQUIREMENT} in {venv}")
            return python
        reason = f"installed {LITELLM_REQUIREMENT} but {python} reports litellm {found or '(none)'} (see {log_path})"
    shutil.rmtree(venv, ignore_errors=True)  # half-built: rebuilt from scratch next time
    return reason


def _quoted(value: str) -> str:
    """A YAML double-quoted scalar; JSON's string escapes are a subset of YAML's."""
    return json.dumps(value)


def write_config(directory: pathlib.Path, upstream_url: str, keys: list[str], model: str,
                 master_key: str) -> pathlib.Path:
    """Write directory/'litellm-config.yaml' for the LiteLLM proxy and return its path.

    One OpenAI-compatible deployment (`openai/<model>`, api_base = upstream_url + '/v1') per key, all
    under model_name = model so LiteLLM's router spreads requests across the keys. Callers send
    master_key as a Bearer token; there is no database. The master key must not be LiteLLM's
    documentation example `sk-1234`, which it refuses to start with. Each setting is explained in
    a comment inside the file.
    """
    if not keys:
        raise ValueError("write_config needs at least one upstream key")
    api_base = upstream_url.rstrip("/") + "/v1"
    lines = [
        "# LiteLLM proxy configuration for poolgate's benchmark (written by bench/litellm_proxy.py).",
        "# It is a plain deployment: LiteLLM's normal auth, routing and usage accounting stay on; only work",
        "# poolgate does not do either is off. The environment set by command() does the rest (no network",
        "# at startup, no access log).",
        "",
        "model_list:",
        "  # One deployment per upstream key, all under the same model_name: the router picks one of them",
        "  # for every request, which is how LiteLLM pools keys.",
    ]
    for key in keys:
        lines += [
            f"  - model_name: {_quoted(model)}",
            "    litellm_params:",
            f"      model: {_quoted('openai/' + model)}",
            f"      api_base: {_quoted(api_base)}",
            f"      api_key: {_quoted(key)}",
        ]
    lines += [
        "",
        "router_settings:",
        "  # LiteLLM's default strategy, written out: a random healthy deployment per request (no rpm/tpm",
        "  # weights are given, so the keys are used evenly). Retries and cooldowns keep their defaults.",
        "  routing_strategy: simple-shuffle",
        "",
        "litellm_settings:",
        "  # No debug logging (the default, written out). No callbacks are configured either, so nothing is",
        "  # sent to logging or observability services. LiteLLM 1.106 has no usage telemetry to turn off",
        "  # (its old `telemetry` setting is ignored); it opens no outbound connection with this setup.",
        "  set_verbose: false",
        "",
        "general_settings:",
        "  # Clients authenticate with this key as a Bearer token, like poolgate's callers with theirs.",
        f"  master_key: {_quoted(master_key)}",
        "  # No database_url: no virtual keys, budgets or spend logs in Postgres, and no Admin UI data.",
        "  # These two say so explicitly, as LiteLLM's production guide advises when the UI's logs are",
        "  # not used, so no spend/error log rows are ever queued for a database.",
        "  disable_spend_logs: true",
        "  disable_error_logs: true",
        "  # Clients connect directly, with no reverse proxy in front. Stating it silences a startup warning",
        "  # and only concerns the Admin UI's sign-in throttling.",
        "  trusted_proxy_ranges: []",
        "",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "litellm-config.yaml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def command(python: pathlib.Path, config: pathlib.Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment variables that start the proxy on 127.0.0.1:port with one worker.

    The caller adds the current environment and pins the process to a CPU (taskset). With this
    environment LiteLLM makes no network request of its own: each file it would otherwise fetch from
    GitHub at import or startup is read from the copy bundled in the package.
    """
    argv = [
        str(python), "-c", _RUN_SERVER_SCRIPT,
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--num_workers", "1",  # uvicorn, one worker: LiteLLM's own recommendation per container
    ]
    env = {
        # The model cost map (also read at import), Anthropic beta headers, autorouter presets, policy
        # templates and blog posts for the UI: read the bundled copies, never raw.githubusercontent.com.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
        "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        # LiteLLM's production guide: no load_dotenv(), so a .env file in the working directory (poolgate's
        # own, say) cannot change its settings.
        "LITELLM_MODE": "PRODUCTION",
        # Warnings and errors only. This also sets uvicorn's level, which drops its per-request access log
        # line (poolgate runs uvicorn with access_log=False); the production guide suggests ERROR.
        "LITELLM_LOG": "WARNING",
        # Cosmetic: no "give feedback" banner at startup.
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    }
    return argv, env


def wait_ready_path() -> str:
    """The path to poll until the proxy serves: it answers 200 once startup is done, without calling upstream.

    (`/health` would call every deployment upstream, and needs the master key.)
    """
    return "/health/readiness"
