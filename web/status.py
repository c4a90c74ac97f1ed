"""What the status page shows, gathered from the store at most every couple of seconds.

A popular proxy's page is reloaded by many visitors (and refreshes itself), so
the store is read once per `CACHE_TTL_SEC` per process and every page and JSON
reply in between is built from that snapshot. Only what depends on the request
(the base URL clients should paste) and the clock is computed per request.

`build_status` is the one place the page's data takes shape: `/status` returns
it as JSON, the default page renders it, and `PAGE_BODY`'s tags read from it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from accounts.budgets import BudgetPolicy, micro_to_usd, month_of
from accounts.schema import AccountsSchema
from accounts.users import UserBook
from catalog.families import known_families
from gateway import __version__

if TYPE_CHECKING:
    from gateway.settings import Settings
    from keypool import KeyPool

CACHE_TTL_SEC = 2.0
ACTIVE_WINDOW_SEC = 60.0  # "people active now": served within the last minute, like the legacy proxy counted IPs
PROVIDERS = ("openai", "anthropic")
# Key states a visitor is shown; `disabled` (an operator's choice) is counted per provider only.
FAMILY_KEY_STATES = ("active", "cooling_down", "over_quota", "revoked")
# Not chat models: listed after every chat family, where visitors look last.
_LISTED_LAST = ("embeddings", "images", "audio", "moderation")


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """The store's answers at one moment; everything the page needs that is not per request."""

    taken_at: float
    keys: list[dict[str, Any]]
    totals: dict[str, int]
    family_usage: dict[str, dict[str, int]]
    people_active_now: int
    queues: dict[str, dict[str, Any]]
    users: dict[str, Any]  # {"total": N, "public": [{"nickname", "prompt_count"}]}: only users who chose public
    month_spend_micro: int = -1  # SHOW_SPEND: the budget month's spend over every request (-1: not shown)


class StatusSource(Protocol):
    """What the status page reads, handed to it when the app is built (the app itself satisfies it)."""

    settings: Settings
    started_at: float

    @property
    def pool(self) -> KeyPool | None: ...

    async def queue_stats(self, keys: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]: ...


class StatusCache:
    """One snapshot per `ttl_sec` per process; concurrent requests during a refresh share one read."""

    def __init__(self, app: StatusSource, ttl_sec: float = CACHE_TTL_SEC) -> None:
        self._app = app
        self._ttl_sec = ttl_sec
        self._snapshot: PoolSnapshot | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> PoolSnapshot:
        if self._fresh():
            assert self._snapshot is not None
            return self._snapshot
        async with self._lock:
            if not self._fresh():
                self._snapshot = await self._take()
            assert self._snapshot is not None
            return self._snapshot

    def _fresh(self) -> bool:
        return self._snapshot is not None and time.monotonic() - self._snapshot.taken_at < self._ttl_sec

    async def _take(self) -> PoolSnapshot:
        pool = self._app.pool
        assert pool is not None, "the status page is served after start-up"
        families = [f for p in PROVIDERS for f in known_families(p)]
        keys = await pool.describe_keys()  # read once: the queue estimates need them too
        users = UserBook(pool.store, AccountsSchema(self._app.settings.redis_prefix), ())
        totals, people, queues, public_users, *usage = await asyncio.gather(
            pool.usage_totals(),
            pool.active_identities(ACTIVE_WINDOW_SEC),
            self._app.queue_stats(keys),
            users.public_summary(),
            *(pool.family_usage(f) for f in families),
        )
        spend = -1
        if self._app.settings.show_spend:  # the month's cost, as settlement counts it (dispatch/settle_lease.lua)
            month = month_of(int(time.time() * 1000), BudgetPolicy(time_zone=self._app.settings.budget_time_zone))
            spend = int(await pool.store.hget(pool.schema.total_usage, f"cost:{month}") or 0)
        return PoolSnapshot(
            month_spend_micro=spend,
            taken_at=time.monotonic(),
            keys=keys,
            totals=totals,
            family_usage=dict(zip(families, usage, strict=True)),
            people_active_now=people,
            queues=queues,
            users=public_users,
        )


def build_status(
    snap: PoolSnapshot, *, settings: Settings, base_url: str, started_at: float, build: str
) -> dict[str, Any]:
    """The status as JSON-ready data: the `/status` body and the page's template context."""
    now = time.time()
    route = "/" + settings.proxy_endpoint_route.strip("/")
    base = (settings.public_url or base_url).rstrip("/")
    keys = [{**k, "state": _effective_state(k, now)} for k in snap.keys]
    families = _families(snap, keys)
    if settings.allowed_model_families:  # families this proxy does not serve are not advertised either
        families = {name: f for name, f in families.items() if name in settings.allowed_model_families}
    totals = snap.totals
    return {
        "title": page_title(settings),
        "uptime_sec": int(now - started_at),
        "uptime": format_duration(now - started_at),
        "build": build,
        "endpoints": {"openai": f"{base}{route}/openai", "anthropic": f"{base}{route}/anthropic"},
        "gatekeeper": settings.gatekeeper,
        "api_key_hint": api_key_hint(settings.gatekeeper_modes),
        "prompts": totals["prompts"],
        "input_tokens": totals["input_tokens"],
        "output_tokens": totals["output_tokens"],
        "tokens": totals["input_tokens"] + totals["output_tokens"],
        **({"month_spend_usd": micro_to_usd(snap.month_spend_micro)} if snap.month_spend_micro >= 0 else {}),
        "people_active_now": snap.people_active_now,
        "users": snap.users,
        "keys": {p: _key_counts([k for k in keys if k["provider"] == p]) for p in PROVIDERS},
        "status": _status_line(keys),
        "families": families,
        "config": _json_ready(settings.public_view()),
    }


def _effective_state(key: dict[str, Any], now: float) -> str:
    # A cooldown that has ended is only written back at the next lease; visitors should see the key as active.
    if key["status"] == "cooling_down" and key["cooldown_until_ms"] <= now * 1000:
        return "active"
    return str(key["status"])


def _key_counts(keys: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"total": len(keys)}
    for state in (*FAMILY_KEY_STATES, "disabled"):
        counts[state] = sum(1 for k in keys if k["state"] == state)
    return counts


def _serves(key: dict[str, Any], family: str) -> bool:
    return "*" in key["families"] or family in key["families"]


def _families(snap: PoolSnapshot, keys: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every family some key may serve, that people wait for, or that has served prompts."""
    out: dict[str, dict[str, Any]] = {}
    listed = [(p, f) for p in PROVIDERS for f in known_families(p) if f not in _LISTED_LAST]
    listed += [(p, f) for p in PROVIDERS for f in known_families(p) if f in _LISTED_LAST]
    known = {f for _, f in listed}
    listed += [("anthropic" if f.startswith("claude") else "openai", f) for f in snap.queues if f not in known]
    for provider, family in listed:
        serving = [k for k in keys if k["provider"] == provider and _serves(k, family)]
        queue = snap.queues.get(family, {})
        usage = snap.family_usage.get(family, {})
        prompts = int(usage.get("prompts", 0))
        in_queue = int(queue.get("in_queue", 0))
        if not serving and not in_queue and not prompts:
            continue
        wait = float(queue.get("estimated_wait_sec", 0.0))
        out[family] = {
            "provider": provider,
            **{f"{state}_keys": sum(1 for k in serving if k["state"] == state) for state in FAMILY_KEY_STATES},
            "in_queue": in_queue,
            "estimated_wait_sec": round(wait, 1),
            "estimated_wait": format_wait(wait),
            "recent_waits": [[float(t), float(w)] for t, w in queue.get("recent_waits", [])],
            "prompts": prompts,
            "tokens": int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0)),
        }
    return out


def _status_line(keys: list[dict[str, Any]]) -> str:
    if not keys:
        return "No keys are configured yet."
    labels = {"active": "active", "cooling_down": "cooling down", "over_quota": "over quota",
              "revoked": "revoked", "disabled": "disabled"}
    parts = [f"{n} {label}" for state, label in labels.items() if (n := sum(k["state"] == state for k in keys))]
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''}: {', '.join(parts)}."


def _json_ready(view: dict[str, Any]) -> dict[str, Any]:
    return {name: list(value) if isinstance(value, tuple) else value for name, value in view.items()}


def api_key_hint(modes: frozenset[str]) -> str:
    """What a visitor puts where a client asks for an API key, for each way this proxy lets people in."""
    if not modes or "none" in modes:
        return "API key: anything; this proxy is open."
    ways = []
    if "proxy_key" in modes:
        ways.append("the proxy password you were given")
    if "user_token" in modes:
        ways.append("your own user token (the admin hands it out; look it up at /user)")
    if "google" in modes:
        ways.append("the token you get by signing in with Google at /login")
    if "app_store" in modes:
        ways.append("in an app: the session it gets from its App Store purchase")
    return "API key: " + "; or ".join(ways) + "."


def page_title(settings: Settings) -> str:
    """SERVER_TITLE, else the HuggingFace Space, else the Render service, else "poolgate" (the legacy order)."""
    if settings.server_title:
        return settings.server_title
    if settings.space_author_name and settings.space_title:
        return f"{settings.space_author_name} / {settings.space_title}"
    if settings.render_service_name:
        return settings.render_service_name
    return "poolgate"


def build_label(settings: Settings) -> str:
    """The version, and the commit when the deployment says which or this is a git checkout."""
    commit = settings.build_commit or settings.render_git_commit or _git_head(Path(__file__).resolve().parents[1])
    return f"{__version__} ({commit[:7]})" if commit else __version__


def _git_head(repo: Path) -> str:
    """The checked-out commit, read from `.git` without running git (not installed on every platform)."""
    try:
        head = (repo / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        loose = repo / ".git" / ref
        if loose.is_file():
            return loose.read_text().strip()
        for line in (repo / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except OSError:
        pass
    return ""


def format_wait(seconds: float) -> str:
    """"no wait" under 2 s, then "N sec", then "M min N sec": what a visitor deciding whether to wait reads."""
    if seconds < 2:
        return "no wait"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} sec"
    return f"{whole // 60} min {whole % 60} sec"


def format_duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} sec"
    return f"{secs} sec"
