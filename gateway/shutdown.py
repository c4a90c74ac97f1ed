"""How a gateway process stops: gracefully on the first SIGTERM (or Ctrl-C), at once on the second.

On the first signal uvicorn stops accepting connections, closes idle ones, and lets the requests
in flight run on, streams and queued requests alike, for up to SHUTDOWN_GRACE_SEC; whatever is
still running then is cancelled, and cancellation is where every held thing is given back: each
lease by its `LeaseHold`, each queue ticket by the queue's own `async with`-like cleanup (both
shielded, so a cancelled request still reaches the store). Then the app's shut-down stops the
background work and closes the store. A second signal skips all waiting: the process exits, and
what it held expires in the store (leases after LEASE_TTL_SEC, tickets after QUEUE_TICKET_TTL_SEC).
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

log = logging.getLogger("poolgate")


class GracefulServer(uvicorn.Server):
    """uvicorn's server, where a second SIGTERM forces the exit as a second Ctrl-C does."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self.should_exit:
            log.warning("%s again: exiting now, without waiting for the requests in flight", name)
            self.force_exit = True
        else:
            log.info(
                "%s: no new connections; the requests in flight have up to %.0f s (SHUTDOWN_GRACE_SEC) to finish; "
                "a second signal exits at once", name, self.config.timeout_graceful_shutdown or 0,
            )
        super().handle_exit(sig, frame)
