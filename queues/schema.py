"""Every Redis key the queues write, built in one place under the shared prefix.

    {prefix}queue:{family}          ZSET  ticket -> fair-order score; the head is served first
    {prefix}tickets                 ZSET  ticket -> expiry (ms), renewed by the process holding it
    {prefix}waiting:{identity}      STR   how many tickets the identity has waiting
    {prefix}tail:{family}:{ident}   STR   where the identity's next ticket goes in the fair order
    {prefix}vtime:{family}          STR   score of the last ticket dispatched (the queue's "now")
    {prefix}served:{family}         LIST  recent dispatch times (ms), newest first
    {prefix}waits:{family}          LIST  recent queue waits "{ms}:{wait ms}", newest first
    {prefix}queued                  SET   families that have a queue now
    {prefix}families                SET   families that ever had a queue (for stats)
    {prefix}wake                    channel: the ticket that should try to claim a key now

A ticket is "{enqueued ms, 13 digits}|{random id}|{identity}": equal scores then
order by arrival, and dropping a dead ticket can find its identity's counter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QueueSchema:
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

    def tail(self, family: str, identity: str) -> str:
        return f"{self.prefix}tail:{family}:{identity}"

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
    def known_families(self) -> str:
        return f"{self.prefix}families"

    @property
    def wake_channel(self) -> str:
        return f"{self.prefix}wake"

    def lease_keys(self, family: str) -> list[str]:
        """The queue's keys that `lease_key.lua` reads and writes (its KEYS[3..8])."""
        return [
            self.queue(family),
            self.tickets,
            self.served(family),
            self.waits(family),
            self.queued_families,
            self.vtime(family),
        ]
