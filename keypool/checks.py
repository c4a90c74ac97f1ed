"""Key checks: what a provider's free endpoints say about one key.

One plain async function per provider, with plain arguments, so the same code
runs in an rq job or in the gateway's own event loop. They only read documented
endpoints that cost nothing — the models list, and for OpenAI the key's
organizations. Whether a key has quota left is never probed (that would spend
money); real traffic reports it (`insufficient_quota`, "credit balance is too
low"), and a check that finds such a key otherwise valid lets it back on
probation.

A check never raises for an upstream problem: it answers `UNKNOWN` with a
reason, and the caller keeps the key as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from catalog.families import DEFAULT_FAMILY, family_of

VALID = "valid"
REVOKED = "revoked"
OVER_QUOTA = "over_quota"
UNKNOWN = "unknown"

ANTHROPIC_VERSION = "2023-06-01"
# Anthropic's published tiers, by requests per minute (tier 1: 50 RPM ... tier 4: 4,000 RPM).
_ANTHROPIC_TIERS = ((50, "tier-1"), (1000, "tier-2"), (2000, "tier-3"), (4000, "tier-4"))


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """What one check learned. `detail` is poolgate's own words, never upstream's text (which may quote the key)."""

    verdict: str  # VALID | REVOKED | OVER_QUOTA | UNKNOWN
    detail: str
    families: tuple[str, ...] = ()  # the model families the key can reach; empty when not learned
    organizations: tuple[str, ...] = ()  # OpenAI: every organization of the key, the default one first
    tier: str = ""  # Anthropic: the usage tier its rate limits suggest


async def check_openai_key(
    base_url: str, secret: str, organization: str = "", *, timeout_sec: float = 20.0
) -> KeyCheck:
    """`GET /v1/models` (valid? which families?) and, for a key not pinned to one, `GET /v1/organizations`.

    The organizations endpoint is the one the OAI Reverse Proxy used to split a
    key that belongs to several organizations into one pool entry each.
    """
    headers = {"authorization": f"Bearer {secret}"}
    if organization:
        headers["openai-organization"] = organization
    async with _client(timeout_sec) as client:
        try:
            models = await client.get(f"{base_url}/v1/models", headers=headers)
        except httpx.HTTPError as exc:
            return KeyCheck(UNKNOWN, f"could not reach upstream ({type(exc).__name__})")
        if models.status_code != 200:
            return _judge_refusal("openai", models)
        families = _families("openai", models)
        organizations: tuple[str, ...] = ()
        if not organization:
            organizations = await _openai_organizations(client, base_url, headers)
    detail = f"models list OK ({len(families)} families)"
    if len(organizations) > 1:
        detail += f", member of {len(organizations)} organizations"
    return KeyCheck(VALID, detail, families, organizations)


async def check_anthropic_key(base_url: str, secret: str, *, timeout_sec: float = 20.0) -> KeyCheck:
    """`GET /v1/models` (valid? which families?); the tier comes from rate-limit headers when the reply has them."""
    headers = {"x-api-key": secret, "anthropic-version": ANTHROPIC_VERSION}
    async with _client(timeout_sec) as client:
        try:
            models = await client.get(f"{base_url}/v1/models", params={"limit": "1000"}, headers=headers)
        except httpx.HTTPError as exc:
            return KeyCheck(UNKNOWN, f"could not reach upstream ({type(exc).__name__})")
    if models.status_code != 200:
        return _judge_refusal("anthropic", models)
    families = _families("anthropic", models)
    tier = anthropic_tier({k.lower(): v for k, v in models.headers.items()}) or ""
    return KeyCheck(VALID, f"models list OK ({len(families)} families)", families, tier=tier)


def anthropic_tier(headers: dict[str, str]) -> str | None:
    """The usage tier an Anthropic reply's `anthropic-ratelimit-requests-limit` suggests; None without one."""
    raw = headers.get("anthropic-ratelimit-requests-limit", "")
    try:
        limit = int(raw)
    except ValueError:
        return None
    for ceiling, tier in _ANTHROPIC_TIERS:
        if limit <= ceiling:
            return tier
    return "custom"


def _client(timeout_sec: float) -> httpx.AsyncClient:
    # A fresh client per check: no cookie jar shared between keys, and never a redirect with a key on it.
    return httpx.AsyncClient(timeout=timeout_sec, follow_redirects=False)


async def _openai_organizations(client: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> tuple[str, ...]:
    """The key's organizations, default first; empty when the endpoint is not there (OpenAI-compatible APIs)."""
    try:
        reply = await client.get(f"{base_url}/v1/organizations", headers=headers)
        data = reply.json().get("data") if reply.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return ()
    if not isinstance(data, list):
        return ()
    orgs = [o for o in data if isinstance(o, dict) and isinstance(o.get("id"), str)]
    orgs.sort(key=lambda o: not o.get("is_default"))
    return tuple(o["id"] for o in orgs)


def _families(provider: str, reply: httpx.Response) -> tuple[str, ...]:
    try:
        data: Any = reply.json().get("data")
    except (ValueError, AttributeError):
        data = None
    names = [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]
    # The catch-all family (models list, models poolgate does not know yet) is every valid key's to try.
    return tuple(sorted({family_of(provider, name) for name in names} | {DEFAULT_FAMILY[provider]}))


def _anthropic_error_type(reply: httpx.Response) -> str:
    try:
        error = reply.json().get("error")
    except ValueError:
        return ""
    return str(error.get("type", "")) if isinstance(error, dict) else ""


def _judge_refusal(provider: str, reply: httpx.Response) -> KeyCheck:
    """What a refused models request says about the key. Only a 401 proves a key revoked."""
    status = reply.status_code
    what = f"upstream answered {status} to GET /v1/models"
    if status == 401:
        return KeyCheck(REVOKED, what)
    text = reply.text.lower()
    if provider == "openai" and status == 429 and "insufficient_quota" in text:
        return KeyCheck(OVER_QUOTA, what + " (insufficient_quota)")
    if provider == "anthropic" and _anthropic_error_type(reply) == "billing_error":
        return KeyCheck(OVER_QUOTA, what + " (billing_error: credit balance too low)")
    # 403 (a restricted key may not list models yet serve chat), 429, 5xx: nothing certain about the key.
    return KeyCheck(UNKNOWN, what)
