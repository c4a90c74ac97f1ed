"""Configuration: one typed object, built once at start-up from the environment.

Names follow the OAI Reverse Proxy where it had one, so existing deployments
carry over. Every setting is declared once, below, with its default and a
one-line description; the README's configuration table and `.env.example` are
generated from (and tested against) these declarations.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounts.legacy_families import legacy_quota_settings
from catalog.families import known_families
from gateway.policy_settings import policy_problems

GATEKEEPERS = ("none", "proxy_key", "user_token", "app_store", "google")


class ConfigError(Exception):
    """Raised with every problem found, one line each, so start-up can print them all at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _setting(env: str, default: Any, doc: str, *, secret: bool = False, aliases: tuple[str, ...] = ()) -> Any:
    """`aliases`: other systems' names for the same setting (Pico's, the OAI Reverse Proxy's), read when
    `env` itself is unset, so their `.env` files work unchanged."""
    return field(default=default, metadata={"env": env, "doc": doc, "secret": secret, "aliases": aliases})


def _known_families() -> tuple[str, ...]:
    return (*known_families("openai"), *known_families("anthropic"))


def token_quota_env(family: str) -> str:
    """`TOKEN_QUOTA_<FAMILY>`: the family upper-cased, every other character (`-`, `.`) an underscore."""
    return "TOKEN_QUOTA_" + re.sub(r"[^A-Z0-9]", "_", family.upper())


def token_quota_field(family: str) -> str:
    """The Settings attribute holding a family's default quota: `token_quota_gpt_4o` for `gpt-4o`."""
    return token_quota_env(family).lower()


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
        "GATEKEEPER", "none",
        "Who may use the proxy: `none` (anyone), or any of `proxy_key` (one shared password), `user_token` (each "
        "user their own token), `app_store` and `google` (sessions from signing in), comma-separated",
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
    # --- accounts: users ---
    max_ips_per_user: int = _setting(
        "MAX_IPS_PER_USER", 0,
        "Most addresses one user token may be used from (0: no limit); a user's own `max_ips` wins",
    )
    max_ips_auto_ban: bool = _setting(
        "MAX_IPS_AUTO_BAN", False, "A user token seen from one address too many is disabled, not just refused"
    )
    quota_refresh_period: str = _setting(
        "QUOTA_REFRESH_PERIOD", "",
        "When users' token quotas refresh: `hourly`, `daily` or a 5-field cron line (server time); unset: never",
    )
    # One default quota per model family, TOKEN_QUOTA_<FAMILY>: declared from the catalog, so a new family
    # gets its setting (and its README row) the day it is added.
    locals().update({
        token_quota_field(family): _setting(
            token_quota_env(family), 0,
            f"Tokens a new user may spend on `{family}` models until the next refresh (0: unlimited)",
            aliases=tuple(n for n in legacy_quota_settings(family) if n != token_quota_env(family)),
        )
        for family in _known_families()
    })
    __annotations__.update({token_quota_field(family): "int" for family in _known_families()})
    # --- accounts: admission (the rate limiter, quota reservations) ---
    rate_limiter: bool = _setting(
        "RATE_LIMITER", False, "Turn the per-user / anonymous rate limiter on (the limits below apply only then)",
        aliases=("enableRateLimiter",),
    )
    rate_limit_user_per_minute: int = _setting(
        "RATE_LIMIT_USER_PER_MINUTE", 15, "Requests one user may send in any 60 s (0: no limit)",
        aliases=("userMinuteRateLimit", "TEXT_MODEL_RATE_LIMIT"),
    )
    rate_limit_user_per_hour: int = _setting(
        "RATE_LIMIT_USER_PER_HOUR", 50, "Requests one user may send in any hour (0: no limit)",
        aliases=("userHourlyRateLimit",),
    )
    rate_limit_user_ban_after: int = _setting(
        "RATE_LIMIT_USER_BAN_AFTER", 50, "Refused requests of a user, while limited, before a ban (0: never ban)",
        aliases=("userPermanentBlock",),
    )
    rate_limit_anon_per_minute: int = _setting(
        "RATE_LIMIT_ANON_PER_MINUTE", 60, "Requests all anonymous callers together may send in any 60 s (0: no limit)",
        aliases=("anonMinuteRateLimit", "TEXT_MODEL_RATE_LIMIT"),
    )
    rate_limit_anon_per_hour: int = _setting(
        "RATE_LIMIT_ANON_PER_HOUR", 200, "Requests all anonymous callers together may send in any hour (0: no limit)",
        aliases=("anonHourlyRateLimit",),
    )
    rate_limit_anon_ban_after: int = _setting(
        "RATE_LIMIT_ANON_BAN_AFTER", 50,
        "Refused requests of one address, while anonymous callers are limited, before that address is banned "
        "(0: never ban)",
        aliases=("anonPermanentBlock",),
    )
    rate_limit_minute_block_sec: int = _setting(
        "RATE_LIMIT_MINUTE_BLOCK_SEC", 300, "How long going over a per-minute limit blocks the caller"
    )
    rate_limit_hour_block_sec: int = _setting(
        "RATE_LIMIT_HOUR_BLOCK_SEC", 3600, "How long going over a per-hour limit blocks the caller"
    )
    image_model_rate_limit: int = _setting(
        "IMAGE_MODEL_RATE_LIMIT", 0,
        "Image generations one caller may ask for in any 60 s, on top of the limits above (0: no limit)",
    )
    quota_default_output_tokens: int = _setting(
        "QUOTA_DEFAULT_OUTPUT_TOKENS", 1024,
        "Output tokens reserved against a user's quota when a request names no maximum (`max_tokens`, ...)",
    )
    # --- policy: request policy (caps, prompt filter, blocks, CORS) ---
    count_prompt_tokens: bool = _setting(
        "COUNT_PROMPT_TOKENS", True,
        "Count each prompt's tokens before it is sent (context caps and quota reservations need it)",
    )
    max_context_tokens_openai: int = _setting(
        "MAX_CONTEXT_TOKENS_OPENAI", 0,
        "Most tokens (prompt + requested output) an OpenAI request may use; 0: no proxy cap (the model's window)",
    )
    max_context_tokens_anthropic: int = _setting(
        "MAX_CONTEXT_TOKENS_ANTHROPIC", 0,
        "Most tokens (prompt + requested output) an Anthropic request may use; 0: no proxy cap",
    )
    max_output_tokens_openai: int = _setting(
        "MAX_OUTPUT_TOKENS_OPENAI", 0,
        "Largest `max_tokens` / `max_completion_tokens` / `max_output_tokens` an OpenAI request gets; 0: no cap",
    )
    max_output_tokens_anthropic: int = _setting(
        "MAX_OUTPUT_TOKENS_ANTHROPIC", 0,
        "Largest `max_tokens` an Anthropic request gets, and the value set when it is absent; 0: no cap",
    )
    reject_phrases: str = _setting(
        "REJECT_PHRASES", "",
        "Prompts matching any of these are refused (403): comma-separated case-insensitive regular expressions, "
        "`\"quoted\"` when one holds a comma (editable at run time: `PUT /admin/policy/prompt-filter`)",
        secret=True,  # not published on the status page: it would tell abusers what to avoid
    )
    reject_message: str = _setting(
        "REJECT_MESSAGE", "This prompt was refused by this proxy's content policy.",
        "What a refused prompt is told",
    )
    ip_blacklist: tuple[str, ...] = _setting(
        "IP_BLACKLIST", (), "Addresses or networks (CIDR, IPv4 and IPv6), comma-separated, refused on every route "
        "(editable at run time: `PUT /admin/policy`)",
        secret=True,  # not published on the status page: it would tell abusers what to avoid
    )
    admin_whitelist: tuple[str, ...] = _setting(
        "ADMIN_WHITELIST", (), "Addresses or networks (CIDR) that may reach `/admin`, comma-separated; unset: any",
        secret=True,  # not published on the status page: it would tell abusers what to avoid
    )
    blocked_origins: tuple[str, ...] = _setting(
        "BLOCKED_ORIGINS", (), "Requests whose `Origin` or `Referer` contains any of these, comma-separated, "
        "are refused (403 `blocked_origin`; editable at run time: `PUT /admin/policy`)",
        secret=True,  # not published on the status page: it would tell abusers what to avoid
    )
    block_message: str = _setting(
        "BLOCK_MESSAGE", "This website may not use this proxy.", "What a request from a blocked origin is told",
    )
    block_redirect: str = _setting(
        "BLOCK_REDIRECT", "", "Where a browser from a blocked origin is sent (unset: it is shown BLOCK_MESSAGE)",
    )
    cors_allowed_origins: tuple[str, ...] = _setting(
        "CORS_ALLOWED_ORIGINS", ("*",), "Web origins whose pages may call the API from a browser, comma-separated "
        "(`*`: any; credentials are bearer tokens, not cookies)",
    )
    # --- translate: OpenAI format <-> Anthropic format ---
    model_aliases: tuple[str, ...] = _setting(
        "MODEL_ALIASES", (), "Model names clients send, and the models they stand for, before routing: "
        "`gpt-4o=claude-sonnet-4-5,fast=gpt-4o-mini`"
    )
    translate_on_provider_routes: bool = _setting(
        "TRANSLATE_ON_PROVIDER_ROUTES", False, "Translate on `/proxy/openai/v1` and `/proxy/anthropic/v1` too "
        "(otherwise a model of the other provider there is a 400, as on the OAI Reverse Proxy)"
    )
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
    # --- signin: sessions, App Store, Google ---
    jwt_secret: str = _setting(
        "JWT_SECRET", "", "Secret signing session tokens (HS256, at least 32 characters); sessions need it",
        secret=True, aliases=("JWTPrivateKey", "AIPROXY_TOKEN_SECRET"),
    )
    session_ttl_sec: int = _setting("SESSION_TTL_SEC", 43200, "How long a session token from signing in is valid")
    app_bundle_id: str = _setting(
        "APP_BUNDLE_ID", "", "Your app's bundle id; App Store sign-in accepts only its purchases",
        aliases=("appBundleId",),
    )
    app_apple_id: int = _setting(
        "APP_APPLE_ID", 0, "Your app's Apple id (a number); needed to accept production purchases",
        aliases=("appAppleId",),
    )
    app_team_id: str = _setting(
        "APP_TEAM_ID", "", "Pico's team id, read so its `.env` works unchanged; verification does not need it",
        aliases=("appTeamId",),
    )
    apple_root_certs_dir: str = _setting(
        "APPLE_ROOT_CERTS_DIR", "", "Folder of Apple root certificates (DER `.cer`); unset: the ones shipped "
        "(`accounts/apple_roots`)",
    )
    app_store_online_checks: bool = _setting(
        "APP_STORE_ONLINE_CHECKS", True, "Ask Apple (OCSP) whether the certificates signing a purchase were revoked",
    )
    app_store_allow_xcode: bool = _setting(
        "APP_STORE_ALLOW_XCODE", False, "Accept Xcode and local-testing purchases, which carry no Apple signature "
        "(development only: anyone can forge them)",
    )
    app_store_api_url: str = _setting(
        "APP_STORE_API_URL", "", "App Store Server API base URL for receipt look-ups; unset: Apple's, per environment",
    )
    iap_private_key: str = _setting(
        "IAP_PRIVATE_KEY", "", "App Store Connect API key (.p8 PEM; `\\n`-escaped on one line is fine), to look up "
        "legacy receipts", secret=True, aliases=("IAPPrivateKey",),
    )
    iap_key_id: str = _setting("IAP_KEY_ID", "", "Id of that App Store Connect API key", aliases=("IAPKeyId",))
    iap_issuer_id: str = _setting(
        "IAP_ISSUER_ID", "", "Issuer id of that App Store Connect API key", aliases=("IAPIssuerId",),
    )
    google_client_id: str = _setting(
        "GOOGLE_CLIENT_ID", "", "OAuth client id of your Google sign-in; Google ID tokens must be issued for it",
    )
    google_allowed_domains: tuple[str, ...] = _setting(
        "GOOGLE_ALLOWED_DOMAINS", (), "Email domains that may sign in with Google, comma-separated; unset: any",
    )
    google_certs_url: str = _setting(
        "GOOGLE_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs",
        "Where Google's token-signing certificates are fetched (cached as Google's Cache-Control says)",
    )
    signin_per_minute: int = _setting(
        "SIGNIN_PER_MINUTE", 10, "Sign-in attempts (App Store, Google) one address may make in any 60 s (0: no limit)",
    )
    # --- money: prices, budgets, usage report (issue 13) ---
    prices_override: str = _setting(
        "PRICES_OVERRIDE", "",
        "A JSON or YAML file of prices (USD per million tokens) for models the price library does not know, or "
        "negotiated prices (README, Budgets and cost)",
    )
    unknown_model_policy: str = _setting(
        "UNKNOWN_MODEL_POLICY", "refuse",
        "A model with no known price: `refuse` (403 for a user with a budget), `free`, or `estimate` (the "
        "provider's dearest rates)",
    )
    monthly_budget_usd: float = _setting(
        "MONTHLY_BUDGET_USD", 0.0, "Each user's monthly budget in USD unless `BUDGETS` says otherwise; 0: none",
    )
    budgets: str = _setting(
        "BUDGETS", "",
        "Monthly budgets in USD as JSON, looked up in this order: `{\"user:<id>\": 5, \"a@b.edu\": 3, "
        "\"@b.edu\": 2, \"*\": 1}` (0: none); written to the store at start-up",
    )
    budget_time_zone: str = _setting(
        "BUDGET_TIME_ZONE", "UTC", "Budget months turn at midnight on the 1st in this time zone (IANA name)",
    )
    usage_db_path: str = _setting(
        "USAGE_DB_PATH", "poolgate-usage.sqlite3", "SQLite file the usage records are moved into",
    )
    usage_database_url: str = _setting(
        "USAGE_DATABASE_URL", "", "PostgreSQL URL for the usage records instead of SQLite (`postgresql://...`)",
        secret=True,
    )
    usage_retention_days: int = _setting(
        "USAGE_RETENTION_DAYS", 400, "Usage records older than this are deleted (0: kept for ever)",
    )
    show_spend: bool = _setting("SHOW_SPEND", False, "The status page shows the month's total spend")

    def _money_problems(self) -> list[str]:
        problems = []
        if self.unknown_model_policy not in ("refuse", "free", "estimate"):
            problems.append(f"UNKNOWN_MODEL_POLICY={self.unknown_model_policy!r} is not one of refuse, free, estimate")
        if self.monthly_budget_usd < 0:
            problems.append("MONTHLY_BUDGET_USD must be 0 (none) or more")
        if self.usage_retention_days < 0:
            problems.append("USAGE_RETENTION_DAYS must be 0 (for ever) or more")
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.budget_time_zone)
        except Exception:
            problems.append(f"BUDGET_TIME_ZONE={self.budget_time_zone!r} is not a time zone name (e.g. Europe/Paris)")
        try:
            self.budget_table()
        except ValueError as error:
            problems.append(f"BUDGETS: {error}")
        if self.prices_override and not Path(self.prices_override).is_file():
            problems.append(f"PRICES_OVERRIDE={self.prices_override!r} is not a file")
        return problems

    def budget_table(self) -> dict[str, float]:
        """BUDGETS as {who: USD}; raises ValueError when it is not a JSON object of numbers."""
        if not self.budgets:
            return {}
        import json

        try:
            table = json.loads(self.budgets)
        except json.JSONDecodeError as error:
            raise ValueError(f"not JSON ({error.msg})") from None
        if not isinstance(table, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in table.values()):
            raise ValueError('expected an object of USD amounts >= 0, e.g. {"*": 5}')
        return {str(k): float(v) for k, v in table.items()}
    # --- pages: the admin pages' sign-in ---
    admin_session_ttl_sec: int = _setting(
        "ADMIN_SESSION_TTL_SEC", 28_800,
        "How long a sign-in to the admin pages (`/admin` in a browser) lasts before the admin key is asked again",
    )

    @property
    def store_is_embedded(self) -> bool:
        return not self.redis_url

    def token_quotas(self) -> dict[str, int]:
        """Family -> the default token quota a new user gets (`TOKEN_QUOTA_<FAMILY>`; 0: unlimited)."""
        return {family: int(getattr(self, token_quota_field(family))) for family in _known_families()}

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
            for name in (f.metadata["env"], *f.metadata["aliases"]):  # the first one set wins
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    break
            else:
                continue
            try:
                values[f.name] = _parse(raw.strip(), f.default)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a valid {type(f.default).__name__}")
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
        unknown_modes = [m for m in self.gatekeeper_modes if m not in GATEKEEPERS]
        if unknown_modes or not self.gatekeeper_modes or ("none" in self.gatekeeper_modes
                                                          and len(self.gatekeeper_modes) > 1):
            problems.append(f"GATEKEEPER={self.gatekeeper!r} is not `none` or some of: {', '.join(GATEKEEPERS[1:])}")
        if "proxy_key" in self.gatekeeper_modes and not self.proxy_key:
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
        problems.extend(self._money_problems())
        if self.admin_session_ttl_sec < 60:
            problems.append("ADMIN_SESSION_TTL_SEC must be at least 60")
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
        rate_limits = [f for f in dataclasses.fields(self) if f.name.startswith("rate_limit_")]
        for f in [*rate_limits, *(f for f in dataclasses.fields(self) if f.name in (
                "image_model_rate_limit", "quota_default_output_tokens"))]:
            if getattr(self, f.name) < 0:
                problems.append(f"{f.metadata['env']} must be 0 or more")
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
        problems.extend(policy_problems(self))
        problems.extend(_alias_problems(self.model_aliases))
        if self.page_body:
            try:
                decode_page_body(self.page_body)
            except ValueError as error:
                problems.append(f"PAGE_BODY {error}")
        problems.extend(self._account_problems())
        problems.extend(self._signin_problems())
        return problems

    @property
    def gatekeeper_modes(self) -> frozenset[str]:
        """GATEKEEPER as the set of modes it names (`user_token,google` -> both)."""
        return frozenset(m.strip() for m in self.gatekeeper.split(",") if m.strip())

    def _signin_problems(self) -> list[str]:
        problems = []
        modes = self.gatekeeper_modes
        if (modes & {"app_store", "google"} or self.jwt_secret) and len(self.jwt_secret) < 32:
            problems.append("JWT_SECRET must be at least 32 characters; GATEKEEPER=app_store or google needs it (it "
                            "signs sessions): `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        if "app_store" in modes and not self.app_bundle_id:
            problems.append("GATEKEEPER=app_store needs APP_BUNDLE_ID (your app's bundle id)")
        if "app_store" in modes:
            from accounts.apple_roots import apple_root_certificates

            if not apple_root_certificates(self.apple_root_certs_dir):
                problems.append(f"GATEKEEPER=app_store needs Apple's root certificates, and APPLE_ROOT_CERTS_DIR="
                                f"{self.apple_root_certs_dir!r} holds no .cer file: download AppleRootCA-G3.cer from "
                                "https://www.apple.com/certificateauthority/")
        if "google" in modes and not self.google_client_id:
            problems.append("GATEKEEPER=google needs GOOGLE_CLIENT_ID (your Google sign-in's OAuth client id)")
        if self.session_ttl_sec <= 0 or self.signin_per_minute < 0 or self.app_apple_id < 0:
            problems.append("SESSION_TTL_SEC must be positive; SIGNIN_PER_MINUTE and APP_APPLE_ID 0 or more")
        for name in ("GOOGLE_CERTS_URL", "APP_STORE_API_URL"):
            url = getattr(self, name.lower())
            if url and not url.startswith(("http://", "https://")):
                problems.append(f"{name}={url!r} must start with http:// or https://")
        return problems

    def _account_problems(self) -> list[str]:
        problems = []
        if self.max_ips_per_user < 0:
            problems.append("MAX_IPS_PER_USER must be 0 (no limit) or more")
        negative = [token_quota_env(family) for family, quota in self.token_quotas().items() if quota < 0]
        if negative:
            problems.append(f"{', '.join(negative)} must be 0 (unlimited) or more")
        if refresh_cron(self.quota_refresh_period) is None and self.quota_refresh_period:
            problems.append(
                f"QUOTA_REFRESH_PERIOD={self.quota_refresh_period!r} must be hourly, daily or a 5-field cron line "
                "like `0 */6 * * *`"
            )
        return problems

    @property
    def aliases(self) -> dict[str, str]:
        """MODEL_ALIASES as a mapping: the name a client sends -> the model it stands for."""
        pairs = (entry.partition("=") for entry in self.model_aliases)
        return {name.strip(): model.strip() for name, _, model in pairs}

    def public_view(self) -> dict[str, Any]:
        """The settings a visitor may see: secrets are never included, whatever is asked for.

        URLs lose any `user:password@` an operator may have put in them.
        """
        return {
            f.metadata["env"].lower(): _without_credentials(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not f.metadata["secret"]
        }


def refresh_cron(period: str) -> str | None:
    """QUOTA_REFRESH_PERIOD as a cron line (`hourly`, `daily` or one already), or None: never, or not valid."""
    line = {"hourly": "0 * * * *", "daily": "0 0 * * *"}.get(period.strip().lower(), period.strip())
    if len(line.split()) != 5:
        return None
    from croniter import croniter

    return line if croniter.is_valid(line) else None


def _alias_problems(entries: tuple[str, ...]) -> list[str]:
    return [
        f"MODEL_ALIASES entry {entry!r} must look like gpt-4o=claude-sonnet-4-5" for entry in entries
        if not all(part.strip() for part in entry.partition("=")[::2]) or "=" not in entry
    ]


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
        aliases = f.metadata["aliases"]
        doc = f.metadata["doc"] + (f" (also read as {', '.join(f'`{a}`' for a in aliases)})" if aliases else "")
        rows.append((f.metadata["env"], shown, doc))
    return rows
