"""Configuration: one typed object, built once at start-up from the environment.

Names follow the OAI Reverse Proxy where it had one, so existing deployments
carry over. Every setting is declared once, below, with its default and a
one-line description; the README's configuration table and `.env.example` are
generated from (and tested against) these declarations.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.families import known_families

GATEKEEPERS = ("none", "proxy_key")


class ConfigError(Exception):
    """Raised with every problem found, one line each, so start-up can print them all at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _setting(env: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Everything poolgate can be told, with its default."""

    openai_keys: tuple[str, ...] = _setting(
        "OPENAI_KEY", (), "OpenAI keys, comma-separated; `sk-...:org-...` pins a key to an organization",
        secret=True,
    )
    anthropic_keys: tuple[str, ...] = _setting(
        "ANTHROPIC_KEY", (), "Anthropic keys, comma-separated", secret=True
    )
    gatekeeper: str = _setting(
        "GATEKEEPER", "none", "Who may use the proxy: `none` (anyone) or `proxy_key` (one shared password)"
    )
    proxy_key: str = _setting("PROXY_KEY", "", "The shared password when `GATEKEEPER=proxy_key`", secret=True)
    admin_key: str = _setting(
        "ADMIN_KEY", "", "Bearer token for the admin API under `/admin`; unset: the admin API answers 404",
        secret=True,
    )
    port: int = _setting("PORT", 7860, "Port to listen on")
    bind_address: str = _setting("BIND_ADDRESS", "0.0.0.0", "Address to listen on")
    proxy_endpoint_route: str = _setting(
        "PROXY_ENDPOINT_ROUTE", "/proxy", "Prefix of the provider routes (`/proxy/openai/v1`, `/proxy/anthropic/v1`)"
    )
    redis_url: str = _setting(
        "REDIS_URL", "", "Redis holding all shared state; unset: an embedded in-memory store (one process only)",
        secret=True,
    )
    redis_prefix: str = _setting("REDIS_PREFIX", "poolgate:", "Prefix of every Redis key poolgate writes")
    openai_base_url: str = _setting(
        "OPENAI_BASE_URL", "https://api.openai.com",
        "Upstream OpenAI API (or any OpenAI-compatible API); a trailing `/v1` is dropped with a warning"
    )
    anthropic_base_url: str = _setting(
        "ANTHROPIC_BASE_URL", "https://api.anthropic.com",
        "Upstream Anthropic API; a trailing `/v1` is dropped with a warning"
    )
    extra_allowed_endpoints: tuple[str, ...] = _setting(
        "EXTRA_ALLOWED_ENDPOINTS", (),
        "Widen the endpoint allow-list, comma-separated `provider:path-prefix` (e.g. `openai:fine_tuning`)",
    )
    max_request_bytes: int = _setting(
        "MAX_REQUEST_BYTES", 33_554_432, "Largest request body accepted (bytes); larger gets 413"
    )
    upstream_timeout_sec: float = _setting(
        "UPSTREAM_TIMEOUT_SEC", 600.0, "How long to wait for upstream to start and to continue answering"
    )
    upstream_retries: int = _setting(
        "UPSTREAM_RETRIES", 2, "Extra attempts after an upstream 5xx or connection error, with backoff"
    )
    max_key_attempts: int = _setting(
        "MAX_KEY_ATTEMPTS", 5, "Most keys one request tries after rate-limited, out-of-quota or revoked keys"
    )
    key_cooldown_max_sec: float = _setting(
        "KEY_COOLDOWN_MAX_SEC", 60.0, "Longest a rate-limited key is rested, whatever upstream asks"
    )
    lease_ttl_sec: float = _setting(
        "LEASE_TTL_SEC", 60.0, "A key lease expires after this unless its process renews it (crash safety)"
    )
    allowed_model_families: tuple[str, ...] = _setting(
        "ALLOWED_MODEL_FAMILIES", (),
        "Model families served, comma-separated (e.g. `gpt-4o-mini,claude-haiku`); unset: all; others get 403",
    )
    key_concurrency: int = _setting(
        "KEY_CONCURRENCY", 0, "Most requests one key serves at once before others queue (0: no limit)"
    )
    user_concurrency_limit: int = _setting(
        "USER_CONCURRENCY_LIMIT", 1, "Most requests one person (user, else IP) may have waiting in queues at once"
    )
    tokens_punishment_factor: float = _setting(
        "TOKENS_PUNISHMENT_FACTOR", 0.0,
        "Moves large prompts back in the queue: each 1,000 prompt tokens count as this many extra requests",
    )
    queue_timeout_sec: float = _setting(
        "QUEUE_TIMEOUT_SEC", 300.0, "Longest a request waits in a queue before it gets 504"
    )
    queue_ticket_ttl_sec: float = _setting(
        "QUEUE_TICKET_TTL_SEC", 15.0, "A queued request of a process that died stops holding its place after this"
    )
    heartbeat_interval_sec: float = _setting(
        "HEARTBEAT_INTERVAL_SEC", 5.0, "Seconds between the SSE comments a queued streaming request receives"
    )
    stalled_client_sec: float = _setting(
        "STALLED_CLIENT_SEC", 30.0,
        "A client that takes no data for this long is dropped: upstream cancelled, its key freed",
    )
    check_keys: bool = _setting(
        "CHECK_KEYS", True, "Check keys at start-up, when added, on a schedule and after traffic retires them"
    )
    key_check_interval_openai_hours: float = _setting(
        "KEY_CHECK_INTERVAL_OPENAI_HOURS", 8.0, "How often every OpenAI key is rechecked (models, organizations)"
    )
    key_check_interval_anthropic_hours: float = _setting(
        "KEY_CHECK_INTERVAL_ANTHROPIC_HOURS", 6.0, "How often every Anthropic key is rechecked (models)"
    )
    key_recheck_backoff_sec: tuple[str, ...] = _setting(
        "KEY_RECHECK_BACKOFF_SEC", ("60", "3600", "21600", "86400"),
        "Seconds until a key retired by traffic (revoked, out of quota) is rechecked, then again while it "
        "stays bad; the last step repeats",
    )
    key_check_timeout_sec: float = _setting(
        "KEY_CHECK_TIMEOUT_SEC", 20.0, "How long one key check may wait for upstream"
    )
    admin_lockout_failures: int = _setting(
        "ADMIN_LOCKOUT_FAILURES", 10, "Failed admin logins from one address before it is locked out"
    )
    admin_lockout_sec: float = _setting(
        "ADMIN_LOCKOUT_SEC", 900.0, "How long an address is locked out of the admin API (and its failures remembered)"
    )
    forwarded_allow_ips: str = _setting(
        "FORWARDED_ALLOW_IPS", "",
        "Proxies whose `X-Forwarded-For` names the client, comma-separated addresses or networks (`*`: any); "
        "unset: loopback only, or any on a HuggingFace Space, Render or Railway, whose proxy is the only way in",
    )
    client_header_timeout_sec: float = _setting(
        "CLIENT_HEADER_TIMEOUT_SEC", 10.0,
        "Longest a client may take to send a request's headers, from connecting; then the connection is closed",
    )
    client_body_timeout_sec: float = _setting(
        "CLIENT_BODY_TIMEOUT_SEC", 30.0, "Longest a client may pause while sending a request body; then it is closed"
    )
    max_connections_per_address: int = _setting(
        "MAX_CONNECTIONS_PER_ADDRESS", 64,
        "Most connections one address may hold open to a gateway process (0: no limit); "
        "trusted proxies (`FORWARDED_ALLOW_IPS`) are not limited",
    )
    server_title: str = _setting(
        "SERVER_TITLE", "", "Title of the status page (unset: the HuggingFace Space or Render service name)"
    )
    public_url: str = _setting(
        "PUBLIC_URL", "", "Base URL clients use (e.g. `https://proxy.example.org`); unset: taken from each request"
    )
    page_body: str = _setting(
        "PAGE_BODY", "", "Custom status page body: base64 HTML with `{tags}` and Jinja syntax (see Status page)",
        secret=True,
    )
    service_info_password: str = _setting(
        "SERVICE_INFO_PASSWORD", "", "Password for the status page and `/status` (unset: public)", secret=True
    )
    space_id: str = _setting("SPACE_ID", "", "Set by HuggingFace Spaces; tells poolgate it runs behind their proxy")
    render: bool = _setting("RENDER", False, "Set to `true` by Render; tells poolgate it runs behind their proxy")
    space_author_name: str = _setting("SPACE_AUTHOR_NAME", "", "Set by HuggingFace Spaces; part of the default title")
    space_title: str = _setting("SPACE_TITLE", "", "Set by HuggingFace Spaces; part of the default title")
    render_service_name: str = _setting("RENDER_SERVICE_NAME", "", "Set by Render; the title when nothing else is")
    build_commit: str = _setting(
        "BUILD_COMMIT", "", "Commit the running code was built from, shown as the build (Render's own is used too)"
    )
    render_git_commit: str = _setting("RENDER_GIT_COMMIT", "", "Set by Render; the build when `BUILD_COMMIT` is unset")
    log_level: str = _setting("LOG_LEVEL", "info", "`debug`, `info`, `warning` or `error`")
    # --- operations: logs, shutdown, platforms ---
    log_format: str = _setting("LOG_FORMAT", "text", "`text`, or `json`: one JSON object per log line")
    shutdown_grace_sec: float = _setting(
        "SHUTDOWN_GRACE_SEC", 25.0,
        "On SIGTERM, how long answers in flight may take to finish before the process exits (a second signal: at once)",
    )
    railway_environment: str = _setting(
        "RAILWAY_ENVIRONMENT", "", "Set by Railway; tells poolgate it runs behind their proxy"
    )
    redis_cluster: bool = _setting(
        "REDIS_CLUSTER", False,
        "`REDIS_URL` is a Redis Cluster node (or a managed \"cluster mode\" endpoint); `REDIS_PREFIX` then gets a "
        "hash tag (`{poolgate}:`) so every key lives in one slot",
    )
    redis_sentinels: tuple[str, ...] = _setting(
        "REDIS_SENTINELS", (),
        "Redis Sentinel addresses, comma-separated `host:port`; `REDIS_URL`'s host is then the master's name "
        "(`redis://:password@mymaster/0`)",
    )

    @property
    def store_is_embedded(self) -> bool:
        return not self.redis_url

    @property
    def trusted_forwarders(self) -> str:
        """Whose `X-Forwarded-For` is believed: `FORWARDED_ALLOW_IPS`, else what the platform implies.

        Anyone who reaches poolgate directly could name any address in that header and so dodge
        per-person limits or put an admin lockout on someone else; only a proxy in front may name
        the client. HuggingFace Spaces, Render and Railway are reached only through their own proxy, whose
        addresses they do not publish, so there every forwarder is believed.
        """
        if self.forwarded_allow_ips:
            return self.forwarded_allow_ips
        if self.space_id or self.render or self.railway_environment:
            return "*"
        return "127.0.0.1,::1"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, env_file: str | None = ".env", notices: list[str] | None = None
    ) -> Settings:
        """Build settings from `env` (default: the process environment over a `.env` file, if any).

        Raises ConfigError listing every problem, one line each. What was corrected rather than
        refused (a base URL ending in `/v1`) is appended to `notices`, one line each, for start-up to say.
        """
        if env is None:
            merged: dict[str, str] = {}
            if env_file and Path(env_file).is_file():
                from dotenv import dotenv_values

                merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
            merged.update(os.environ)
            env = merged
        problems: list[str] = []
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = _parse(raw.strip(), f.default)
            except ValueError:
                problems.append(f"{f.metadata['env']}={raw!r} is not a valid {type(f.default).__name__}")
        if values.get("redis_cluster") and "{" not in values.get("redis_prefix", "poolgate:"):
            values["redis_prefix"] = _hash_tagged(values.get("redis_prefix", "poolgate:"))
        for name in ("openai_base_url", "anthropic_base_url"):
            if name in values:
                values[name] = _upstream_base(values[name], name.upper(), notices if notices is not None else [])
        settings = cls(**values)
        problems.extend(settings._problems())
        if problems:
            raise ConfigError(problems)
        return settings

    def _problems(self) -> list[str]:
        problems = []
        if self.gatekeeper not in GATEKEEPERS:
            problems.append(f"GATEKEEPER={self.gatekeeper!r} is not one of: {', '.join(GATEKEEPERS)}")
        if self.gatekeeper == "proxy_key" and not self.proxy_key:
            problems.append("GATEKEEPER=proxy_key needs PROXY_KEY (the password clients send)")
        if not self.proxy_endpoint_route.startswith("/") or self.proxy_endpoint_route.rstrip("/") in ("", "/v1"):
            problems.append(f"PROXY_ENDPOINT_ROUTE={self.proxy_endpoint_route!r} must be a path like /proxy")
        for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
            url = getattr(self, name.lower())
            if not url.startswith(("http://", "https://")):
                problems.append(f"{name}={_without_credentials(url)!r} must start with http:// or https://")
        if "@" in self.openai_base_url.partition("://")[2].partition("/")[0]:
            problems.append(  # OpenAI-format upstreams take the key in Authorization, which basic auth would replace
                f"OPENAI_BASE_URL={_without_credentials(self.openai_base_url)!r} cannot carry user:password@: "
                "the key travels in the Authorization header"
            )
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.redis_cluster and not self.redis_url:
            problems.append("REDIS_CLUSTER=true needs REDIS_URL (a node of the cluster)")
        if self.redis_sentinels and (not self.redis_url or self.redis_cluster):
            problems.append("REDIS_SENTINELS needs REDIS_URL naming the master (redis://:password@mymaster/0), "
                            "and no REDIS_CLUSTER")
        for entry in self.extra_allowed_endpoints:
            provider, _, path = entry.partition(":")
            if provider not in ("openai", "anthropic") or not path.strip("/"):
                problems.append(f"EXTRA_ALLOWED_ENDPOINTS entry {entry!r} must look like openai:fine_tuning")
        unknown = [f for f in self.allowed_model_families if f not in _known_families()]
        if unknown:
            problems.append(
                f"ALLOWED_MODEL_FAMILIES names unknown families {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(_known_families())}"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            problems.append(f"LOG_LEVEL={self.log_level!r} is not one of debug, info, warning, error")
        if self.log_format not in ("text", "json"):
            problems.append(f"LOG_FORMAT={self.log_format!r} is not one of text, json")
        if self.shutdown_grace_sec < 0:
            problems.append("SHUTDOWN_GRACE_SEC must be 0 or more")
        if not 1 <= self.port <= 65535:
            problems.append(port_problem(f"PORT={self.port}"))
        for name in ("MAX_REQUEST_BYTES", "MAX_KEY_ATTEMPTS"):
            if getattr(self, name.lower()) <= 0:
                problems.append(f"{name} must be positive")
        for name in ("UPSTREAM_TIMEOUT_SEC", "KEY_COOLDOWN_MAX_SEC", "LEASE_TTL_SEC", "STALLED_CLIENT_SEC"):
            if getattr(self, name.lower()) <= 0:
                problems.append(f"{name} must be positive")
        if self.client_header_timeout_sec <= 0 or self.client_body_timeout_sec <= 0:
            problems.append("CLIENT_HEADER_TIMEOUT_SEC and CLIENT_BODY_TIMEOUT_SEC must be positive")
        if self.max_connections_per_address < 0:
            problems.append("MAX_CONNECTIONS_PER_ADDRESS must be 0 (no limit) or more")
        if self.key_concurrency < 0 or self.user_concurrency_limit < 0 or self.tokens_punishment_factor < 0:
            problems.append("KEY_CONCURRENCY, USER_CONCURRENCY_LIMIT and TOKENS_PUNISHMENT_FACTOR must be 0 or more")
        if self.queue_timeout_sec <= 0 or self.heartbeat_interval_sec <= 0 or self.queue_ticket_ttl_sec <= 0:
            problems.append("QUEUE_TIMEOUT_SEC, QUEUE_TICKET_TTL_SEC and HEARTBEAT_INTERVAL_SEC must be positive")
        if self.upstream_retries < 0:
            problems.append("UPSTREAM_RETRIES must be zero or more")
        for name in ("KEY_CHECK_INTERVAL_OPENAI_HOURS", "KEY_CHECK_INTERVAL_ANTHROPIC_HOURS", "KEY_CHECK_TIMEOUT_SEC",
                     "ADMIN_LOCKOUT_SEC", "ADMIN_LOCKOUT_FAILURES"):
            if getattr(self, name.lower()) <= 0:
                problems.append(f"{name} must be positive")
        try:
            steps = [float(step) for step in self.key_recheck_backoff_sec]
            if not steps or min(steps) < 0:
                raise ValueError
        except ValueError:
            problems.append("KEY_RECHECK_BACKOFF_SEC must be seconds, comma-separated, like 60,3600,21600,86400")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            problems.append(f"PUBLIC_URL={self.public_url!r} must start with http:// or https://")
        if self.page_body:
            try:
                decode_page_body(self.page_body)
            except ValueError as error:
                problems.append(f"PAGE_BODY {error}")
        return problems

    def public_view(self) -> dict[str, Any]:
        """The settings a visitor may see: secrets are never included, whatever is asked for.

        URLs lose any `user:password@` an operator may have put in them.
        """
        return {
            f.metadata["env"].lower(): _without_credentials(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.metadata["secret"]
        }


def _known_families() -> tuple[str, ...]:
    return (*known_families("openai"), *known_families("anthropic"))


def port_problem(given: str) -> str:
    return f"{given} is not a port: it must be 1 to 65535"


def _hash_tagged(prefix: str) -> str:
    """`poolgate:` -> `{poolgate}:`: on a Redis Cluster every key then hashes to one slot, so each Lua script,
    which reaches keys it picks itself (the key it leases), runs on the one node holding them all.
    Only with REDIS_CLUSTER, so a single Redis's existing keys keep their names."""
    name = prefix.rstrip(":")
    return "{" + (name or "poolgate") + "}:"


def _upstream_base(url: str, env: str, notices: list[str]) -> str:
    """The base URL without a trailing `/v1`, which every upstream path already starts with.

    Left in, every call would go to `/v1/v1/...` while the key still looks fine to the pool.
    """
    trimmed = url.rstrip("/")
    if trimmed.lower().endswith("/v1"):
        trimmed = trimmed[:-3].rstrip("/")
        notices.append(
            f"{env}={_without_credentials(url)!r} ends in /v1; poolgate adds /v1 itself, "
            f"so it uses {_without_credentials(trimmed)!r}"
        )
    return trimmed


def _without_credentials(value: Any) -> Any:
    if isinstance(value, str) and "://" in value and "@" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
    return value


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(default, int):
        return int(raw.replace("_", ""))
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def decode_page_body(raw: str) -> str:
    """PAGE_BODY's HTML. Base64 because HTML does not survive every platform's secret form intact.

    Line breaks (`base64` wraps at 76 columns) and the URL-safe alphabet are accepted.
    Raises ValueError saying what is wrong, for the start-up problem list.
    """
    import base64
    import binascii

    compact = "".join(raw.split())
    try:
        data = base64.b64decode(compact.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64 (encode the HTML with `base64 -w0 page.html`)") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("does not decode to UTF-8 text") from None

def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the source of the README table and .env.example."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        rows.append((f.metadata["env"], shown, f.metadata["doc"]))
    return rows
