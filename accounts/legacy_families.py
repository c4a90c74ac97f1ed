"""The OAI Reverse Proxy's model family names, and which poolgate family (catalog/families.py) each one is.

Its user exports count tokens per its own names (`gpt4o`, `claude`, `aws-claude`, ...) and its
quota settings are named after them (`TOKEN_QUOTA_GPT4O`, `TOKEN_QUOTA_CLAUDE`). Cloud variants
(`aws-`, `azure-`, `gcp-`) share their model's family. Names of families poolgate does not serve
(Gemini, Mistral, ...) have no poolgate family.
"""

from __future__ import annotations

LEGACY_FAMILIES = {
    "turbo": "turbo", "gpt4": "gpt-4", "gpt4-32k": "gpt-4-32k", "gpt4-turbo": "gpt-4-turbo", "gpt4o": "gpt-4o",
    "gpt41": "gpt-4.1", "gpt41-mini": "gpt-4.1-mini", "gpt41-nano": "gpt-4.1-mini", "gpt45": "openai-other",
    "gpt5": "gpt-5", "gpt5-mini": "gpt-5", "gpt5-nano": "gpt-5", "gpt5-chat-latest": "gpt-5", "gpt5-pro": "gpt-5",
    "o1": "o-series", "o1-mini": "o-series", "o1-pro": "o-series", "o3": "o-series", "o3-mini": "o-series",
    "o3-pro": "o-series", "o4-mini": "o-series", "codex-mini": "o-series",
    "dall-e": "images", "gpt-image": "images",
    "claude": "claude-sonnet", "claude-opus": "claude-opus",
}
_CLOUD_PREFIXES = ("aws-", "azure-", "gcp-")


def poolgate_family(name: str, families: tuple[str, ...]) -> str | None:
    """The poolgate family a legacy (or poolgate) family name counts in, or None when poolgate serves none."""
    if name in families:
        return name
    for prefix in _CLOUD_PREFIXES:
        name = name.removeprefix(prefix)
    family = LEGACY_FAMILIES.get(name, name)
    return family if family in families else None


def legacy_quota_settings(family: str) -> tuple[str, ...]:
    """The OAI Reverse Proxy's `TOKEN_QUOTA_*` names for a poolgate family, in its table's order."""
    return tuple(
        "TOKEN_QUOTA_" + legacy.upper().replace("-", "_")
        for legacy, target in LEGACY_FAMILIES.items() if target == family
    )
