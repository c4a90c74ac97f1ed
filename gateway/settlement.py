"""Stage 8, settle: give the key back and account for what was served.

Tokens come from upstream's own `usage` (the whole body, or the stream's usage
events); a reply without usage still counts as a prompt served. Accounting and
the lease's return are one atomic step, so nothing is counted twice or lost
when a process dies between them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dispatch import Dispatcher
from keypool import FAILED, OK, KeyLease, RateBudget, Usage

log = logging.getLogger("poolgate.settle")


async def settle_usage(
    pool: Dispatcher, lease: KeyLease, family: str, usage: Usage | None, identity: str, budget: RateBudget | None
) -> None:
    """Also records the key's rate-limit budget the reply reported, which paces the key from now on."""
    try:
        await pool.settle(lease, family, OK, usage=usage or Usage(), identity=identity, budget=budget)
    except Exception as exc:  # the reply has gone out; the lease will expire by itself
        log.error("could not settle lease of key %s: %s", lease.key_id, type(exc).__name__)


class LeaseHold:
    """One lease, owned in one place and given back exactly once: `async with` settles it on any exit.

    An exit by exception returns it as FAILED; an exit without an explicit settlement returns it OK,
    uncounted. A second settlement is a no-op, so every path may settle without counting twice.
    """

    def __init__(self, pool: Dispatcher, lease: KeyLease, family: str) -> None:
        self.pool = pool
        self.lease = lease
        self.family = family
        self.settled = False

    async def settle(self, outcome: str = OK, **details: Any) -> str | None:
        if self.settled:
            return None
        self.settled = True
        return await self.pool.settle(self.lease, self.family, outcome, **details)

    async def settle_usage(self, usage: Usage | None, identity: str, budget: RateBudget | None) -> None:
        if self.settled:
            return
        self.settled = True
        await settle_usage(self.pool, self.lease, self.family, usage, identity, budget)

    async def __aenter__(self) -> LeaseHold:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.settled:
            return
        try:
            await asyncio.shield(self.settle(OK if exc_type is None else FAILED))
        except Exception as error:  # the lease will expire by itself
            log.error("could not settle lease of key %s: %s", self.lease.key_id, type(error).__name__)
