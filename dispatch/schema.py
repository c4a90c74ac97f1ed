"""Every Redis key where waiting tickets meet free keys, built in one place under the shared prefix.

    {prefix}queue:{family}          ZSET  ticket -> fair-order score; the head is served first
    {prefix}tickets                 ZSET  ticket -> expiry (ms, store clock), renewed by the process holding it
    {prefix}waiting:{identity}      STR   how many tickets the identity has waiting
    {prefix}vtime:{family}          STR   score of the last ticket dispatched (the queue's "now")
    {prefix}served:{family}         LIST  recent dispatch times (ms), newest first
    {prefix}waits:{family}          LIST  recent queue waits "{ms}:{wait ms}", newest first
    {prefix}queued                  SET   families that have a queue now
    {prefix}wake                    channel: the ticket that should try to claim a key now

A ticket is "{arrival ms, 13 digits}|{random id}|{identity}", stamped by the
store: equal scores then order by arrival, and dropping a dead ticket can find
its identity's counter. The key pool's own keys (key hashes, candidate sets,
leases) are `keypool.schema.PoolSchema`'s; the queue's ordering keys beyond
these are `queues.schema.QueueSchema`'s.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DispatchSchema:
    prefix: str = "poolgate:"

    def queue(self, family: str) -> str:
        return f"{self.prefix}queue:{family}"

    @property
    def queue_prefix(self) -> str:
        return f"{self.prefix}queue:"

    @property
    def tickets(self) -> str:
        return f"{self.prefix}tickets"

    @property
    def waiting_prefix(self) -> str:
        return f"{self.prefix}waiting:"

    def waiting(self, identity: str) -> str:
        return f"{self.prefix}waiting:{identity}"

    def vtime(self, family: str) -> str:
        return f"{self.prefix}vtime:{family}"

    def served(self, family: str) -> str:
        return f"{self.prefix}served:{family}"

    def waits(self, family: str) -> str:
        return f"{self.prefix}waits:{family}"

    @property
    def queued_families(self) -> str:
        return f"{self.prefix}queued"

    @property
    def wake_channel(self) -> str:
        return f"{self.prefix}wake"

    def lease_keys(self, family: str) -> list[str]:
        """The queue's keys that `lease_key.lua` reads and writes (its KEYS[2..7])."""
        return [
            self.queue(family),
            self.tickets,
            self.served(family),
            self.waits(family),
            self.queued_families,
            self.vtime(family),
        ]
