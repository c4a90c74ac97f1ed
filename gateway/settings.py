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
        "ADMIN_KEY", "", "Bearer token for the admin API (reserved: the admin API arrives with key management)",
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
        "OPENAI_BASE_URL", "https://api.openai.com", "Upstream OpenAI API (or any OpenAI-compatible API), without `/v1`"
    )
    anthropic_base_url: str = _setting(
        "ANTHROPIC_BASE_URL", "https://api.anthropic.com", "Upstream Anthropic API, without `/v1`"
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
    forwarded_allow_ips: str = _setting(
        "FORWARDED_ALLOW_IPS", "*",
        "Proxies whose `X-Forwarded-For` names the client (`*`: any; set your load balancer's address "
        "when clients can reach poolgate directly)",
    )
    log_level: str = _setting("LOG_LEVEL", "info", "`debug`, `info`, `warning` or `error`")

    @property
    def store_is_embedded(self) -> bool:
        return not self.redis_url

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, env_file: str | None = ".env") -> Settings:
        """Build settings from `env` (default: the process environment over a `.env` file, if any).

        Raises ConfigError listing every problem, one line each.
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
                problems.append(f"{name}={url!r} must start with http:// or https://")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("REDIS_URL must start with redis://, rediss:// or unix://")
        for entry in self.extra_allowed_endpoints:
            provider, _, path = entry.partition(":")
            if provider not in ("openai", "anthropic") or not path.strip("/"):
                problems.append(f"EXTRA_ALLOWED_ENDPOINTS entry {entry!r} must look like openai:fine_tuning")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            problems.append(f"LOG_LEVEL={self.log_level!r} is not one of debug, info, warning, error")
        for name in ("PORT", "MAX_REQUEST_BYTES", "MAX_KEY_ATTEMPTS"):
            if getattr(self, name.lower()) <= 0:
                problems.append(f"{name} must be positive")
        for name in ("UPSTREAM_TIMEOUT_SEC", "KEY_COOLDOWN_MAX_SEC", "LEASE_TTL_SEC"):
            if getattr(self, name.lower()) <= 0:
                problems.append(f"{name} must be positive")
        if self.upstream_retries < 0:
            problems.append("UPSTREAM_RETRIES must be zero or more")
        return problems

    def public_view(self) -> dict[str, Any]:
        """The settings a visitor may see: secrets are never included, whatever is asked for."""
        return {
            f.metadata["env"].lower(): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata["secret"]
        }


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


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the source of the README table and .env.example."""
    rows = []
    for f in dataclasses.fields(Settings):
        default = f.default
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        rows.append((f.metadata["env"], shown, f.metadata["doc"]))
    return rows
