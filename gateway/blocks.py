"""Who may not use this gateway at all: blocked addresses and origins, and who may reach `/admin`.

`IP_BLACKLIST` (addresses or CIDR networks, IPv4 and IPv6) gets 403 on every
route; `ADMIN_WHITELIST`, when set, is the only networks `/admin` answers;
`BLOCKED_ORIGINS` refuses requests whose `Origin` or `Referer` contains one of
its entries — web front-ends reselling the proxy — with 403 `blocked_origin`
and `BLOCK_MESSAGE`, or, for a browser asking for a page, a page that sends it
to `BLOCK_REDIRECT`.

The settings are the lists at first start; `PUT /admin/policy` replaces them
in the store, one key,

    {prefix}policy:lists   STRING  JSON {"ip_blacklist": [...], "admin_whitelist": [...], "blocked_origins": [...]}

and every process reads it every `REFRESH_SEC` in the background (one GET,
gateway/stored_policy.py), so a change takes effect everywhere within about
that long and the hot path never asks the store. The address is the client as uvicorn sees it:
`X-Forwarded-For` counts only from a trusted proxy (`FORWARDED_ALLOW_IPS`).
"""

from __future__ import annotations

import html
import ipaddress
import logging
from dataclasses import asdict, dataclass
from typing import Any

from gateway.policy_settings import network_problems
from gateway.stored_policy import StoredPolicy

log = logging.getLogger("poolgate.policy")

REFRESH_SEC = 1.0
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def lists_key(redis_prefix: str) -> str:
    return f"{redis_prefix}policy:lists"


@dataclass(frozen=True, slots=True)
class PolicyLists:
    ip_blacklist: tuple[str, ...] = ()
    admin_whitelist: tuple[str, ...] = ()
    blocked_origins: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Any) -> PolicyLists:
        """The lists from an admin's JSON object; ValueError names what is wrong (never echoing whole values)."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object with ip_blacklist, admin_whitelist and blocked_origins")
        unknown = set(data) - {"ip_blacklist", "admin_whitelist", "blocked_origins"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown)[:5])}")
        values: dict[str, tuple[str, ...]] = {}
        for name in ("ip_blacklist", "admin_whitelist", "blocked_origins"):
            entries = data.get(name, [])
            if not isinstance(entries, list) or not all(isinstance(e, str) and e.strip() for e in entries):
                raise ValueError(f"{name} must be a list of non-empty strings")
            values[name] = tuple(e.strip() for e in entries)
        problems = network_problems(values["ip_blacklist"]) + network_problems(values["admin_whitelist"])
        if problems:
            raise ValueError("; ".join(problems[:3]))
        return cls(**values)

    def as_json(self) -> dict[str, list[str]]:
        return {name: list(value) for name, value in asdict(self).items()}


class Blocks:
    """The lists in force in this process, kept in step with the store (gateway/stored_policy.py)."""

    def __init__(self, store: Any, redis_prefix: str, defaults: PolicyLists) -> None:
        self._stored = StoredPolicy(store, lists_key(redis_prefix), default=defaults, parse=PolicyLists.from_json,
                                    as_json=PolicyLists.as_json, use=self._use, interval_sec=REFRESH_SEC,
                                    name="poolgate-policy-lists", what="policy lists", log=log)

    @property
    def lists(self) -> PolicyLists:
        return self._lists

    def address_blocked(self, address: str) -> bool:
        return _within(address, self._blacklist)

    def admin_refused(self, address: str) -> bool:
        return bool(self._whitelist) and not _within(address, self._whitelist)

    def origin_blocked(self, headers: dict[bytes, bytes]) -> bool:
        if not self._origins:
            return False
        seen = " ".join(headers.get(name, b"").decode("latin-1").lower() for name in (b"origin", b"referer"))
        return any(origin in seen for origin in self._origins)

    async def replace(self, lists: PolicyLists) -> None:
        """Store new lists (every process picks them up) and use them here at once."""
        await self._stored.replace(lists)

    async def start(self) -> None:
        await self._stored.start()

    async def stop(self) -> None:
        await self._stored.stop()

    def _use(self, lists: PolicyLists) -> None:
        self._lists = lists
        self._blacklist = tuple(ipaddress.ip_network(e, strict=False) for e in lists.ip_blacklist)
        self._whitelist = tuple(ipaddress.ip_network(e, strict=False) for e in lists.admin_whitelist)
        self._origins = tuple(o.lower() for o in lists.blocked_origins)


def _within(address: str, networks: tuple[_Network, ...]) -> bool:
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # "unknown" (no peer address): nothing to match
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def blocked_page(message: str, redirect: str) -> bytes:
    """The page a browser from a blocked origin is shown: the message, and a redirect when one is set."""
    refresh = f'<meta http-equiv="refresh" content="0; url={html.escape(redirect, quote=True)}">' if redirect else ""
    link = f'<p><a href="{html.escape(redirect, quote=True)}">Continue</a></p>' if redirect else ""
    return (f'<!doctype html><html><head><meta charset="utf-8">{refresh}<title>Blocked</title></head>'
            f"<body><p>{html.escape(message)}</p>{link}</body></html>").encode()
