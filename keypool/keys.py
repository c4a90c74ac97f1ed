"""API keys as configured: parsing, ids and masking.

A key's id is a short hash of its secret, so state can be named, logged and
shown without the secret ever appearing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PROVIDERS = ("openai", "anthropic")
STATUSES = ("active", "cooling_down", "over_quota", "revoked", "disabled")


@dataclass(frozen=True, slots=True)
class ConfiguredKey:
    provider: str
    secret: str
    organization: str = ""

    @property
    def key_id(self) -> str:
        return key_id_for(self.provider, self.secret, self.organization)


def key_id_for(provider: str, secret: str, organization: str = "") -> str:
    """A stable 12-hex-digit id; the same secret in two organizations is two pool entries."""
    digest = hashlib.sha256(f"poolgate|{provider}|{secret}|{organization}".encode()).hexdigest()
    return digest[:12]


def parse_keys(provider: str, entries: tuple[str, ...] | list[str]) -> list[ConfiguredKey]:
    """Turn `OPENAI_KEY`-style entries into keys; `sk-...:org-...` pins an OpenAI organization."""
    keys: dict[str, ConfiguredKey] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        secret, organization = entry, ""
        if provider == "openai" and ":org-" in entry:
            secret, _, org = entry.partition(":org-")
            organization = "org-" + org
        key = ConfiguredKey(provider, secret, organization)
        keys[key.key_id] = key
    return list(keys.values())


def mask_secret(secret: str) -> str:
    """`sk-...abcd`: enough for an operator to recognise a key, useless to anyone else."""
    head = secret[:3] if secret.startswith(("sk-", "sk_")) else ""
    return f"{head}...{secret[-4:]}" if len(secret) > 8 else "..."
