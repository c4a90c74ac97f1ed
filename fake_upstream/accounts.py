"""What a key's account holds in the mock: its organizations and the models it may use.

Like the behaviours in `behaviour.py`, a key's text decides: `orgs2` (or
`orgs3`...) makes an OpenAI key a member of that many organizations, the
mock's usual one being the default, and refuses (401) an `OpenAI-Organization`
header naming any other; `nogpt4` hides every `gpt-4*` model from an
OpenAI key, `noopus` every Opus model from an Anthropic key. Hidden models are
missing from the key's models list and refused with the real API's 404.
"""

from __future__ import annotations

import re
from functools import lru_cache

ORGANIZATION = "org-mockupstream000000000000"
_ORGS = re.compile(r"orgs(\d+)")


@lru_cache(maxsize=4096)
def organizations_of(key: str) -> tuple[str, ...]:
    """The key's organizations, its default one first."""
    match = _ORGS.search(key.lower())
    count = max(1, int(match.group(1))) if match else 1
    return (ORGANIZATION, *(f"org-mockextra{number:015d}" for number in range(2, count + 1)))


def belongs_to(key: str | None, organization: str) -> bool:
    """Whether a request may name this organization; only keys that name `orgsN` are strict about it."""
    if not key or not _ORGS.search(key.lower()):
        return True
    return organization in organizations_of(key)


def may_use_model(key: str | None, model: str) -> bool:
    """Whether the key's account may use `model` (any text; unknown models are the endpoint's business)."""
    text = (key or "").lower()
    name = model.lower()
    if "nogpt4" in text and name.startswith("gpt-4"):
        return False
    return not ("noopus" in text and "opus" in name)


def organizations_body(key: str) -> dict[str, object]:
    """`GET /v1/organizations` as the OAI Reverse Proxy read it: `data[].id` and `is_default`."""
    orgs = organizations_of(key)
    return {
        "object": "list",
        "data": [
            {
                "object": "organization",
                "id": org,
                "created": 1680000000 + number,
                "title": "Personal" if number == 0 else f"Team {number}",
                "name": f"user-mock{number}" if number == 0 else f"team-mock{number}",
                "description": None,
                "personal": number == 0,
                "is_default": number == 0,
                "role": "owner",
            }
            for number, org in enumerate(orgs)
        ],
    }
