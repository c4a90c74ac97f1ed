"""How a gateway process stops: gracefully on the first SIGTERM (or Ctrl-C), at once on the second.

On the first signal uvicorn stops accepting connections, closes idle ones, and lets the requests
in flight run on, streams and queued requests alike, for up to SHUTDOWN_GRACE_SEC; whatever is
still running then is cancelled, and cancellation is where every held thing is given back: each
lease by its `LeaseHold`, each queue ticket by the queue's own `async with`-like cleanup (both
shielded, so a cancelled request still reaches the store). Then the app's shut-down stops the
background work and closes the store. A second signal skips all waiting: the process exits, and
what it held expires in the store (leases after LEASE_TTL_SEC, tickets after QUEUE_TICKET_TTL_SEC).

Every wait is bounded, so a platform's SIGTERM always ends the process: each step of the app's
shut-down gets at most STOP_STEP_SEC and all of them STOP_WITHIN_SEC (`within`), whatever the
store does (a Redis that stopped answering) and even if a task swallows its cancellation. With
`--workers N` each worker is a `GracefulServer` too (`GracefulProcess`), and the supervisor waits
for its workers no longer than the grace plus the app's shut-down before it kills them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("poolgate")

# The app's shut-down (PoolgateApp.stop) as a whole, and each of its steps. Stopping a task or closing a
# connection takes milliseconds; a step still running after seconds waits on a store that does not answer.
STOP_WITHIN_SEC = 20.0
STOP_STEP_SEC = 5.0
# After uvicorn's shut-down (or a second signal, which skips its waits) the process is given this long to end
# before it is ended regardless: asyncio's last act, cancelling the tasks left and waiting for them, could hang.
FORCED_EXIT_SEC = 2.0
# The supervisor's wait for its workers beyond the grace and the app's shut-down, before it kills them.
WORKER_EXIT_MARGIN_SEC = 10.0


class GracefulServer(uvicorn.Server):
    """uvicorn's server, where a second SIGTERM forces the exit as a second Ctrl-C does."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self.should_exit:
            log.warning("%s again: exiting now, without waiting for the requests in flight (process %d)",
                        name, os.getpid())
            self.force_exit = True
            _exit_soon(FORCED_EXIT_SEC)
        else:
            log.info(
                "%s: no new connections; the requests in flight have up to %.0f s (SHUTDOWN_GRACE_SEC) to finish; "
                "a second signal exits at once (process %d)", name, self.config.timeout_graceful_shutdown or 0,
                os.getpid(),
            )
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # Left now is asyncio's own exit: cancelling the tasks still running and waiting for them. A task deaf to
        # its cancellation (a shut-down step `within` left behind) would hold that wait, and the process, forever.
        _exit_soon(FORCED_EXIT_SEC)


def _exit_soon(seconds: float) -> None:
    """End the process after `seconds` unless it has ended by then (a daemon thread dies with the process)."""
    def end() -> None:
        time.sleep(seconds)
        log.warning("still running %g s after the shut-down: ending the process", seconds)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=end, name="poolgate-forced-exit", daemon=True).start()


async def within(deadline: float, step: str, work: Awaitable[Any]) -> None:
    """Run one shut-down step until it ends, STOP_STEP_SEC pass or the loop time `deadline` comes.

    A step cut short is cancelled and left behind with one warning line; its failure is one line too (the
    exception's type only: a Redis error may quote the URL). `asyncio.wait` rather than a timeout around
    the await: a task that swallows its cancellation would hold a cancelled await forever.
    """
    loop = asyncio.get_running_loop()
    seconds = max(0.1, min(STOP_STEP_SEC, deadline - loop.time()))  # a closing socket still gets its moment
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("shut-down: %s did not finish within %.1f s (is the store answering?); going on without it",
                    step, seconds)
        return
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.warning("shut-down: %s failed: %s", step, type(error).__name__)


class GracefulProcess(Process):
    """A worker of `--workers N`: uvicorn's, running a `GracefulServer` (unpickled in the worker by this name)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = GracefulServer(config=self.config)
        return self._server


class GracefulSupervisor(Multiprocess):
    """uvicorn's supervisor of `--workers N`, with graceful workers and a bounded wait for them at exit.

    uvicorn's waits for each worker without end: one worker stuck in its shut-down held the whole service,
    deaf to further signals. Here a signal during that wait is passed on (the workers then exit at once),
    and a worker still running after its grace, its app's shut-down and a margin is killed.
    """

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = GracefulProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        """uvicorn's, replacing a dead or hung worker with a graceful one rather than with uvicorn's own kind."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app cannot start: a new worker would fail the same way
                log.error("worker process %s failed to start: stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker process %s died: starting another", process.pid)
            replacement = GracefulProcess(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement

    def join_all(self) -> None:
        grace = self.config.timeout_graceful_shutdown or 0
        deadline = time.monotonic() + grace + STOP_WITHIN_SEC + WORKER_EXIT_MARGIN_SEC
        for process in self.processes:
            while process.process.is_alive() and time.monotonic() < deadline:
                process.process.join(timeout=0.2)
                if self.signal_queue:  # a second signal: the workers skip their graceful exit too
                    self.signal_queue.clear()
                    log.warning("signal again: telling the workers to exit at once")
                    for worker in self.processes:
                        if worker.process.is_alive() and worker.pid is not None:
                            os.kill(worker.pid, signal.SIGTERM)
            if process.process.is_alive():
                log.error("worker process %s did not exit in time after SIGTERM: killing it", process.pid)
                process.kill()
                process.process.join(timeout=5)


def serve_workers(config: uvicorn.Config) -> None:
    """`--workers N` as `uvicorn.run` runs it, under the `GracefulSupervisor`."""
    sock = config.bind_socket()
    try:
        GracefulSupervisor(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
