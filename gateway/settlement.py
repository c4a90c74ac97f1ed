"""Stage 8, settle: give the key back and account for what was served.

Tokens come from upstream's own `usage` (the whole body, or the stream's usage
events); a reply without usage still counts as a prompt served. Accounting and
the lease's return are one atomic step, so nothing is counted twice or lost
when a process dies between them.
"""

from __future__ import annotations

import logging

from keypool import OK, KeyLease, KeyPool, RateBudget, Usage

log = logging.getLogger("poolgate.settle")


async def settle_usage(
    pool: KeyPool, lease: KeyLease, family: str, usage: Usage | None, identity: str, budget: RateBudget | None
) -> None:
    """Also records the key's rate-limit budget the reply reported, which paces the key from now on."""
    try:
        await pool.settle(lease, family, OK, usage=usage or Usage(), identity=identity, budget=budget)
    except Exception as exc:  # the reply has gone out; the lease will expire by itself
        log.error("could not settle lease of key %s: %s", lease.key_id, type(exc).__name__)
