"""Small formatting shared by the admin and user pages: times, pasted lists, and the fixed notices after a post."""

from __future__ import annotations

import re
import time

# What `?done=` may name after a post-then-redirect: fixed texts, so a link cannot put words on the page.
NOTICES = {
    "recheck-all": "Every key is being checked; the results show here when done.",
    "key-disable": "The key is disabled.",
    "key-enable": "The key is enabled and being checked.",
    "key-recheck": "The key is being checked.",
    "key-remove": "The key is removed.",
    "policy-saved": "The lists are saved; every gateway process uses them within about a second.",
    "filter-saved": "The prompt filter is saved; every gateway process uses it within about a second.",
    "user-saved": "The user is saved.",
    "user-disable": "The user is disabled.",
    "user-enable": "The user is enabled (and any rate-limit ban on it lifted).",
    "user-refresh-quota": "The user's quotas are refreshed.",
    "user-revoke-sessions": "Every sign-in session of the user has ended (in every process); its token still works.",
    "user-delete": "The user is deleted; its token no longer works.",
}


def lines_of(text: str, *, commas: bool) -> list[str]:
    """The entries of a pasted list: one per line (and, when `commas`, comma-separated too), blanks dropped."""
    parts = re.split(r"[\r\n,]+" if commas else r"[\r\n]+", text)
    return [part.strip() for part in parts if part.strip()]


def when(ms: int | None) -> str:
    """A store time (ms) as a short UTC date and time; a dash for none."""
    if not ms:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def usd(value: float) -> str:
    """Dollars with cents, and with up to six decimals for what costs less than a cent ($0.000123)."""
    whole, _, fraction = f"{value:,.6f}".rstrip("0").partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"
