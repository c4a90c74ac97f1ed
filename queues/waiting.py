"""Stage 6, lease: a key at once if one is free, else a fair place in the family's queue.

The queue lives in Redis, so its order is global across every gateway process;
the waiting happens in the process that holds the client's connection. Waiting
is driven by events: when a key is released, the dispatch room
(`dispatch/settle_lease.lua`) publishes the ticket at the head of each queue
that key serves, and only that ticket's process tries to claim it (one atomic
claim-and-lease, `dispatch/lease_key.lua`); whoever drops a dead head wakes the
new one. When the head learns that the keys are resting until a known time, it
sets a timer for that moment, and the next in line one for when the head's
ticket would expire. Two slow safety re-checks cover what no event announces:
the head re-checks every heartbeat (a lost wake-up message), everyone else once
per ticket TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatch import Dispatcher, NoKeyAvailable
from keypool import KeyLease
from keypool.leases import LeaseKeeper
from queues.schema import QueueSchema

log = logging.getLogger("poolgate.queues")
_HERE = Path(__file__).parent

OnWait = Callable[[int], Awaitable[None]]


class ClientGone(Exception):
    """The client hung up while its request waited."""


class QueueRefusal(Exception):
    """The queue cannot give this request a key; the gateway tells the client in its dialect."""

    def __init__(self, message: str, *, retry_after_sec: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_sec = retry_after_sec


class NoKeyForFamily(QueueRefusal):
    """No key in the pool can ever serve the family (none configured, or all retired)."""


class QueueTimeout(QueueRefusal):
    """The request waited its whole allowance without a key coming free."""


class TooManyWaiting(QueueRefusal):
    """The identity already has as many requests waiting as it may."""


@dataclass(slots=True)
class Place:
    """Where a request stands, kept across its retries: when it arrived (its first try, on the store's clock),
    its queue score, and how long it has waited. A retry after a 429 lines up by these, not as a newcomer."""

    arrived_ms: int = 0  # stamped by the store at the request's first try for a key
    score: str | None = None
    waited_ms: int = 0


class FamilyQueues:
    def __init__(
        self,
        redis: Any,
        dispatcher: Dispatcher,
        *,
        user_concurrency_limit: int,
        queue_timeout_sec: float,
        heartbeat_interval_sec: float,
        tokens_punishment_factor: float,
        ticket_ttl_sec: float = 15.0,
    ) -> None:
        self._redis = redis
        self._dispatch = dispatcher
        self.schema = QueueSchema(dispatcher.schema.prefix)
        self._limit = user_concurrency_limit
        self._timeout = queue_timeout_sec
        self._heartbeat = heartbeat_interval_sec
        self._punishment = tokens_punishment_factor
        self._ticket_ttl_ms = int(ticket_ttl_sec * 1000)  # a crashed process's tickets leave the head within this
        self._enqueue = dispatcher.scripts.register_script((_HERE / "enqueue.lua").read_text())
        self._leave = dispatcher.scripts.register_script((_HERE / "leave.lua").read_text())
        self._waiters: dict[str, asyncio.Event] = {}
        self._tickets = LeaseKeeper(redis, self.schema.tickets, ticket_ttl_sec)
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: Any = None

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.schema.wake_channel)
        self._listener = asyncio.create_task(self._listen(), name="poolgate-queue-wakeups")
        self._tickets.start()

    async def stop(self) -> None:
        await self._tickets.stop()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    ticket = message.get("data")
                    ticket = ticket.decode() if isinstance(ticket, bytes) else ticket
                    waiter = self._waiters.get(ticket)
                    if waiter is not None:
                        waiter.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection: resubscribe; head re-checks cover the gap
                log.warning("queue wake-ups interrupted (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(self.schema.wake_channel)

    async def acquire(
        self,
        provider: str,
        family: str,
        identity: str,
        place: Place,
        *,
        prompt_bytes: int = 0,
        on_wait: OnWait | None = None,
        hang_up: Callable[[], asyncio.Future[Any]] | None = None,
        first_try: asyncio.Future[Any] | None = None,
    ) -> KeyLease:
        """A lease for the family: at once when a key is free and nobody waits, else after a fair wait.

        `hang_up` gives a future that completes when the client leaves; it is
        asked for only when the request has to wait. `first_try`: the fast-path
        attempt already sent (`Dispatcher.send_lease`), pipelined with admission;
        its answer stands for this call's own. It is shielded: a request cancelled
        while it comes leaves it whole for admission to hand back.
        """
        try:
            if first_try is not None:  # its answer came with admission's, as a rule: then nothing to wait for
                answer = first_try.result() if first_try.done() else await asyncio.shield(first_try)
                lease = self._dispatch.read_lease(provider, answer)
            else:
                lease = await self._dispatch.lease_key(provider, family)
            place.arrived_ms = place.arrived_ms or lease.leased_at_ms
            return lease
        except NoKeyAvailable as none:
            place.arrived_ms = place.arrived_ms or none.at_ms  # its arrival, on the store's clock
            if none.reason == "no_keys":
                raise _no_key(family) from None
        return await self._wait_in_line(
            provider, family, identity, place, prompt_bytes, on_wait, hang_up() if hang_up else None
        )

    async def _wait_in_line(
        self,
        provider: str,
        family: str,
        identity: str,
        place: Place,
        prompt_bytes: int,
        on_wait: OnWait | None,
        hang_up: asyncio.Future[Any] | None,
    ) -> KeyLease:
        started = time.monotonic()
        # The store stamps the ticket with the first arrival: among equal scores, whoever came first goes first.
        tail = f"{secrets.token_hex(5)}|{identity}"
        woken = asyncio.Event()
        ticket = ""
        try:
            ticket, position = await self._join(tail, family, place, prompt_bytes)
            # A wake-up published before this line is not lost: the first claim below comes next anyway.
            self._waiters[ticket] = woken
            self._tickets.hold(ticket)
            deadline = started + self._timeout
            next_heartbeat = started + self._heartbeat
            recheck_every = self._ticket_ttl_ms / 1000
            if on_wait is not None:
                await on_wait(position)
            while True:
                woken.clear()  # before trying: a wake-up that lands during the attempt is kept
                try:
                    lease = await self._dispatch.lease_key(provider, family, ticket=ticket)
                    place.waited_ms += int((time.monotonic() - started) * 1000)
                    return lease
                except NoKeyAvailable as none:
                    if none.reason == "no_keys":
                        raise _no_key(family) from None
                    if none.reason == "gone":  # our ticket expired (a stalled process): back in at our score
                        ticket, position = await self._join(tail, family, place, prompt_bytes)
                        continue
                    position = none.position if none.reason == "behind" else 0
                    timer = time.monotonic() + none.retry_after_sec if none.retry_after_sec else None
                    next_recheck = time.monotonic() + recheck_every
                # Wait for a reason to try again: a wake-up, the known moment a key comes back, or,
                # for the head only, a heartbeat (in case a wake-up message was lost).
                while True:
                    now = time.monotonic()
                    if now >= deadline:
                        raise QueueTimeout(
                            f"Waited {self._timeout:.0f} s in the {family} queue without a key coming free; "
                            "try again later.",
                        )
                    wake_at = min(deadline, next_heartbeat, next_recheck, timer or deadline)
                    if await self._sleep(woken, hang_up, wake_at - now):
                        break
                    now = time.monotonic()
                    if (timer is not None and now >= timer) or now >= next_recheck:
                        break
                    if now >= next_heartbeat:
                        next_heartbeat = now + self._heartbeat
                        if on_wait is not None:
                            await on_wait(position)
                        if position == 0:
                            break
        except BaseException:
            if ticket:
                await self._abandon(ticket, family, identity)
            raise
        finally:
            self._waiters.pop(ticket, None)
            self._tickets.drop(ticket)

    async def _join(self, tail: str, family: str, place: Place, prompt_bytes: int) -> tuple[str, int]:
        """Queue the request; its ticket and position. The store stamps its arrival the first time."""
        q = self.schema
        identity = tail.split("|", 1)[1]
        penalty = self._punishment * (prompt_bytes / 4) / 1000  # ~4 bytes a token; factor 1 = +1 slot per 1k tokens
        result = await self._enqueue(
            keys=[
                q.queue(family), q.tickets, q.waiting(identity), q.tail(family, identity), q.vtime(family),
                q.queued_families, q.known_families,
            ],
            args=[tail, place.arrived_ms or "", self._ticket_ttl_ms, self._limit, penalty, family,
                  place.score or ""],
        )
        if int(result[0]) != 1:
            raise TooManyWaiting(
                f"You already have {int(result[1])} request(s) waiting for a key (the limit is {self._limit}); "
                "wait for them to finish.",
                retry_after_sec=self._heartbeat,
            )
        place.score = _text(result[1])
        place.arrived_ms = int(result[4])
        return _text(result[3]), int(result[2])

    async def _abandon(self, ticket: str, family: str, identity: str) -> None:
        q = self.schema
        with contextlib.suppress(Exception):
            await asyncio.shield(
                self._leave(
                    keys=[q.queue(family), q.tickets, q.waiting(identity), q.queued_families],
                    args=[ticket, family, q.wake_channel],
                )
            )

    @staticmethod
    async def _sleep(woken: asyncio.Event, hang_up: asyncio.Future[Any] | None, seconds: float) -> bool:
        """True when woken; raises ClientGone when the client hangs up first; False on time-out."""
        if hang_up is not None and hang_up.done():
            raise ClientGone
        waiter = asyncio.ensure_future(woken.wait())
        pending = {waiter} if hang_up is None else {waiter, hang_up}
        try:
            done, _ = await asyncio.wait(pending, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if hang_up is not None and hang_up in done:
            raise ClientGone
        return waiter in done

    async def stats(self, keys: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Per family: requests in queue, estimated wait, and recent actual waits.

        `keys` is `KeyPool.describe_keys()` when the caller has it already; the
        keys are read only if someone is waiting (the estimate needs them then).
        """
        q = self.schema
        families = sorted(_text(f) for f in await self._redis.smembers(q.known_families))
        if not families:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()  # every stamp compared below is the store's
            for family in families:
                pipe.zcard(q.queue(family))
                pipe.lrange(q.served(family), 0, -1)
                pipe.lrange(q.waits(family), 0, -1)
            replies = await pipe.execute()
        now_ms = int(replies[0][0]) * 1000 + int(replies[0][1]) // 1000
        results = replies[1:]
        if keys is None and any(int(results[3 * i]) for i in range(len(families))):
            keys = await self._dispatch.pool.describe_keys()
        stats = {}
        for i, family in enumerate(families):
            in_queue, served, waits = results[3 * i : 3 * i + 3]
            waits_pairs = [tuple(int(x) for x in _text(w).split(":", 1)) for w in waits]
            stats[family] = {
                "in_queue": int(in_queue),
                "estimated_wait_sec": estimate_wait_sec(
                    int(in_queue), [int(s) for s in served], waits_pairs, now_ms,
                    _first_key_back_ms(keys, family, now_ms) if int(in_queue) and keys is not None else None,
                ),
                "recent_waits": [[t / 1000, w / 1000] for t, w in reversed(waits_pairs)],
            }
        return stats


def estimate_wait_sec(
    in_queue: int,
    served_ms: list[int],
    waits: list[tuple[int, ...]],
    now_ms: float,
    first_key_back_ms: float | None = None,
) -> float:
    """What a request joining now should expect to wait.

    Throughput is dispatches over the last minute, divided by the whole
    minute (or the time since the first dispatch, when the family is younger),
    never by the span of a burst: paced keys serve in bursts, and a burst
    measured on its own looks like a rate the pool cannot sustain.

    When every key that serves the family is held back (budget spent, or
    resting), the line moves in bursts: nothing until the first key comes back
    (`first_key_back_ms`), then about a minute's throughput per minute. Else,
    by Little's law, those ahead / throughput. With no dispatch yet, the median
    of the waits people had lately stands in.
    """
    if in_queue == 0:
        return 0.0
    recent = [t for t in served_ms if now_ms - t <= 60_000]
    if recent:
        observed_sec = min(60.0, max((now_ms - min(served_ms)) / 1000, 10.0))
        per_minute = len(recent) * 60 / observed_sec
        if first_key_back_ms is not None and first_key_back_ms > now_ms:
            # Held back: each window serves what the last one did (its burst), not an extrapolation of it.
            return (first_key_back_ms - now_ms) / 1000 + 60.0 * ((in_queue - 1) // len(recent))
        return in_queue * 60 / per_minute
    lately = sorted(w / 1000 for t, w in waits if now_ms - t <= 300_000)
    return lately[len(lately) // 2] if lately else 0.0


def _first_key_back_ms(keys: list[dict[str, Any]], family: str, now_ms: float) -> float | None:
    """When the first key serving the family may take a request again, if none may now; None if one may."""
    provider = "anthropic" if family.startswith("claude") else "openai"
    back: list[float] = []
    for key in keys:
        if key["provider"] != provider or not ({"*", family} & set(key["families"])):
            continue
        if key["status"] in ("revoked", "over_quota", "disabled"):
            continue
        held = max(key["paced_until_ms"], key["cooldown_until_ms"] if key["status"] == "cooling_down" else 0)
        if held <= now_ms:
            return None  # this one is free, or only busy: Little's law applies
        back.append(held)
    return min(back) if back else None


def _no_key(family: str) -> NoKeyForFamily:
    return NoKeyForFamily(f"No key in the pool can serve {family} models.")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
