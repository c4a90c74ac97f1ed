"""Every Redis key the queues write, built in one place under the shared prefix.

The keys where a ticket meets a key (the queue itself, ticket expiry, waiting
counters, wake-ups, dispatch statistics) are `dispatch.schema.DispatchSchema`'s,
which this extends with the keys only the fair ordering uses:

    {prefix}tail:{family}:{ident}   STR   where the identity's next ticket goes in the fair order
    {prefix}families                SET   families that ever had a queue (for stats)
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.schema import DispatchSchema


@dataclass(frozen=True, slots=True)
class QueueSchema(DispatchSchema):
    def tail(self, family: str, identity: str) -> str:
        return f"{self.prefix}tail:{family}:{identity}"

    @property
    def known_families(self) -> str:
        return f"{self.prefix}families"
