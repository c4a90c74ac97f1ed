"""`poolgate`: run the gateway, a demo of it, the fake upstream, or print the configuration reference."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import socket
import sys
from typing import Any

from gateway import __version__
from gateway.logging_setup import configure_logging
from gateway.settings import ConfigError, Settings, port_problem, settings_table

log = logging.getLogger("poolgate")

# The demo's pool, served by the fake upstream in the same process. The fake upstream reads a key's
# behaviour from its text (fake_upstream/behaviour.py): `rpm1` answers one request a minute, then 429
# with Retry-After, so the pool rests it; `revoked` answers 401, so the start-up check retires it.
DEMO_OPENAI_KEYS = ("sk-demo-good-1", "sk-demo-good-2", "sk-demo-rpm1-limited", "sk-demo-revoked")
DEMO_ANTHROPIC_KEYS = ("sk-ant-demo-good-1", "sk-ant-demo-good-2")
NO_KEYS_HINT = (
    "no keys configured: set OPENAI_KEY and/or ANTHROPIC_KEY (or add keys with the admin API), "
    "or try `poolgate demo` for a pool of fake keys"
)


def build_parser() -> argparse.ArgumentParser:
    """Every command and option of `poolgate` (the deploy recipes' commands are checked against it)."""
    parser = argparse.ArgumentParser(prog="poolgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"poolgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="address to bind (default: BIND_ADDRESS, 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: PORT, 7860)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (more than 1 needs REDIS_URL)")
    serve.add_argument("--demo", action="store_true", help="same as `poolgate demo`")

    demo = commands.add_parser(
        "demo", help="try poolgate without keys: one process, the embedded store, a fake upstream with demo keys"
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    demo.add_argument("--port", type=int, help="port (default: PORT, 7860)")

    worker = commands.add_parser("worker", help="run key checks: rq worker + rq cron scheduler (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="check what is due and what is queued, then exit")

    commands.add_parser("mock-upstream", help="run the fake OpenAI/Anthropic API for tests and demos", add_help=False)

    config = commands.add_parser("config", help="print the configuration reference")
    config.add_argument("--format", choices=("markdown", "env"), default="markdown")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "mock-upstream":
        from fake_upstream import main as mock_main

        mock_main(rest)
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "worker":
        sys.exit(start_worker(args.burst))
    if args.command == "config":
        print(render_config_reference(args.format))
        return
    if args.command == "demo" or args.demo:
        sys.exit(serve_demo(args.host or "127.0.0.1", args.port))
    sys.exit(serve_gateway(args.host, args.port, args.workers))


def _load_settings() -> Settings | None:
    """Settings from the environment, or None after saying what is wrong, one line per problem.

    What was corrected instead of refused is said too, one warning line each.
    """
    notices: list[str] = []
    try:
        settings = Settings.from_env(notices=notices)
    except ConfigError as err:
        for problem in err.problems:
            print(f"poolgate: configuration: {problem}", file=sys.stderr)
        return None
    configure_logging(settings)  # from here on every line is in LOG_FORMAT
    for notice in [*notices, *start_up_warnings(settings)]:
        log.warning(notice)
    return settings


def start_up_warnings(settings: Settings) -> list[str]:
    """What is allowed but probably a mistake, one line each."""
    warnings = []
    platform = settings.space_id or settings.render or settings.railway_environment
    if settings.forwarded_allow_ips.strip() == "*" and not platform:
        warnings.append(
            "FORWARDED_ALLOW_IPS=* believes X-Forwarded-For from anyone, and this is not a HuggingFace Space, Render "
            "or Railway, whose proxy is the only way in: anyone reaching this port directly can pose as any address "
            "(dodging per-person limits). Name your proxy's addresses instead."
        )
    return warnings


def _store_answers(settings: Settings) -> bool:
    """False, after saying why in one line, when REDIS_URL is set and cannot be used."""
    if settings.redis_sentinels:
        unreachable = sentinel_problem(settings.redis_url, settings.redis_sentinels)
    else:
        unreachable = None if settings.store_is_embedded else store_problem(settings.redis_url, settings.redis_cluster)
    if unreachable:
        print(f"poolgate: cannot use REDIS_URL ({unreachable})", file=sys.stderr)
    return unreachable is None


def serve_demo(host: str, port: int | None) -> int:
    """The gateway in front of the fake upstream, in one process, with a pool of demo keys.

    Keys, base URLs and REDIS_URL from the environment are set aside: the demo never spends a real key
    and never writes into a real store. Everything else (GATEKEEPER, PROXY_KEY, PORT...) still applies.
    """
    settings = _load_settings()
    if settings is None:
        return 2
    from fake_upstream import run_mock_upstream_in_thread

    upstream = run_mock_upstream_in_thread(host="127.0.0.1", port=0)
    demo = dataclasses.replace(
        settings, openai_keys=DEMO_OPENAI_KEYS, anthropic_keys=DEMO_ANTHROPIC_KEYS,
        openai_base_url=upstream.url, anthropic_base_url=upstream.url, redis_url="",
    )
    with upstream:
        return serve_gateway(host, port, 1, settings=demo, on_listening=_demo_banner)


def _demo_banner(settings: Settings, host: str, port: int) -> None:
    """What to paste: base URLs, a curl line and the two SDKs, with the credential the gateway wants."""
    shown_host = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
    base = f"http://{shown_host}:{port}"
    credential = settings.proxy_key if settings.gatekeeper == "proxy_key" else "demo"
    hello = '[{"role": "user", "content": "Hello"}]'
    print(
        f"""poolgate demo: a fake OpenAI and Anthropic API, demo keys (one revoked, one limited to a request a minute)

  status page      {base}/
  OpenAI base URL  {base}/proxy/openai/v1
  Anthropic base   {base}/proxy/anthropic

  curl {base}/proxy/openai/v1/chat/completions -H 'Authorization: Bearer {credential}' \\
       -H 'Content-Type: application/json' -d '{{"model": "gpt-4o-mini", "messages": {hello}}}'

  from openai import OpenAI
  from anthropic import Anthropic
  gpt = OpenAI(base_url="{base}/proxy/openai/v1", api_key="{credential}")
  print(gpt.chat.completions.create(model="gpt-4o-mini", messages={hello}))
  claude = Anthropic(base_url="{base}/proxy/anthropic", api_key="{credential}")
  print(claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages={hello}))

Ctrl-C stops it. With real keys: OPENAI_KEY=sk-... ANTHROPIC_KEY=sk-ant-... poolgate serve""",
        flush=True,
    )


def serve_gateway(
    host: str | None, port: int | None, workers: int, *, settings: Settings | None = None,
    on_listening: Any = None,
) -> int:
    """Run the gateway until it is stopped. `settings` (the demo's) replaces those of the environment;
    `on_listening(settings, host, port)` is called once the port is bound."""
    if port is not None and not 1 <= port <= 65535:
        print(f"poolgate: configuration: {port_problem(f'--port {port}')}", file=sys.stderr)
        return 2
    settings = settings or _load_settings()
    if settings is None:
        return 2
    if workers > 1 and settings.store_is_embedded:
        print(
            f"poolgate: --workers {workers} needs REDIS_URL: the embedded store lives inside one process, "
            "so several workers would each have their own pool and queues. Set REDIS_URL or use --workers 1.",
            file=sys.stderr,
        )
        return 2
    if not _store_answers(settings):
        return 2
    configure_logging(settings)
    import uvicorn

    from gateway.app import create_app
    from gateway.client_guard import guarded_protocol
    from gateway.shutdown import GracefulServer, serve_workers

    host, port = host or settings.bind_address, port or settings.port
    try:  # bound here, before the app starts, so a taken port is one line and exit 1, not a hung process
        listener = listening_socket(host, port)
    except OSError as error:
        print(f"poolgate: cannot listen on {host}:{port}: {_bind_failure(error)}", file=sys.stderr)
        return 1
    if not settings.openai_keys and not settings.anthropic_keys:
        log.warning(NO_KEYS_HINT)
    if on_listening is not None:
        on_listening(settings, host, port)
    options = {
        "host": host,
        "port": port,
        # uvicorn's httptools protocol with header/body timeouts and a cap per address (gateway/client_guard.py)
        "http": guarded_protocol(settings) if workers == 1 else "gateway.client_guard:GuardedHttpToolsProtocol",
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "access_log": False,  # query strings may carry a client's key (`?key=`); poolgate logs what matters
        "log_config": None,  # uvicorn's lines go through poolgate's handler (LOG_FORMAT), set up above
        "log_level": settings.log_level.lower(),
        "proxy_headers": True,
        "forwarded_allow_ips": settings.trusted_forwarders,
        "timeout_keep_alive": 75,
        "timeout_graceful_shutdown": settings.shutdown_grace_sec,  # gateway/shutdown.py
    }
    if workers > 1:
        listener.close()  # uvicorn's supervisor binds again (the check above still caught a taken port)
        serve_workers(uvicorn.Config("gateway.app:create_app", factory=True, workers=workers, **options))  # type: ignore[arg-type]
        return 0
    server = GracefulServer(uvicorn.Config(create_app(settings), **options))  # type: ignore[arg-type]
    with listener:
        server.run(sockets=[listener])
    return 0 if server.started else 1


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, as uvicorn would bind it (address reuse for quick restarts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _bind_failure(error: OSError) -> str:
    reasons = {
        errno.EADDRINUSE: "the port is already in use (is poolgate, or another server, running there?)",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
        errno.EADDRNOTAVAIL: "BIND_ADDRESS is not an address of this machine",
    }
    return reasons.get(error.errno or 0, error.strerror or type(error).__name__)


def start_worker(burst: bool) -> int:
    settings = _load_settings()
    if settings is None or not _store_answers(settings):
        return 2
    if settings.redis_cluster or settings.redis_sentinels:
        print("poolgate: `poolgate worker` cannot run with REDIS_CLUSTER or REDIS_SENTINELS (rq's keys cannot share "
              "poolgate's hash slot, and its client does not follow a failover); there each `poolgate serve` "
              "checks keys itself.", file=sys.stderr)
        return 2
    configure_logging(settings)
    from gateway.worker import run_worker

    return run_worker(settings, burst=burst)


def store_problem(redis_url: str, cluster: bool = False) -> str | None:
    """Why the store cannot be used, in one line without its password; None when it answers."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
        client.ping()
        try:
            is_cluster = client.info("cluster").get("cluster_enabled") == 1
        except redis.ResponseError:  # a managed Redis that refuses INFO: take REDIS_CLUSTER's word for it
            is_cluster = cluster
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {str(exc).replace(redis_url, '<REDIS_URL>')}"
    if is_cluster and not cluster:
        return "it is a Redis Cluster node: set REDIS_CLUSTER=true, so poolgate's keys share one slot"
    if cluster and not is_cluster:
        return "REDIS_CLUSTER=true, but this Redis is not a cluster node"
    return None


def sentinel_problem(redis_url: str, sentinels: tuple[str, ...]) -> str | None:
    """Why the sentinels' master cannot be used, in one line without its password; None when it answers."""
    import asyncio

    from redis.exceptions import RedisError

    from gateway.sentinel import open_sentinel_store

    async def ping() -> None:
        client = open_sentinel_store(redis_url, sentinels, max_connections=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError) as exc:
        return f"{type(exc).__name__} through REDIS_SENTINELS: {str(exc).replace(redis_url, '<REDIS_URL>')}"
    return None


def render_config_reference(fmt: str) -> str:
    """The README's configuration table (`markdown`) or the body of `.env.example` (`env`)."""
    rows = settings_table()
    if fmt == "env":
        lines = []
        for env, default, doc in rows:
            lines.append(f"# {doc}")
            lines.append(f"{env}={default}")
        return "\n".join(lines)
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for env, default, doc in rows:
        lines.append(f"| `{env}` | {f'`{default}`' if default else '(unset)'} | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
