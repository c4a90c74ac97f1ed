"""Stage 5, admit: limits, quotas and budgets, decided before any key is leased.

Nothing is limited yet: per-user limits, quotas and budgets arrive with user
tokens, and will reserve their estimate here in the same atomic step that
checks them, to be corrected when the request settles.
"""

from __future__ import annotations

from gateway.gatekeeper import Identity
from gateway.validation import UpstreamCall


async def admit(call: UpstreamCall, identity: Identity) -> None:
    """Raise GatewayError("rate_limited", ...) when the identity may not send this call now."""
    return None
