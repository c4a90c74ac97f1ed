"""Ways to run the mock upstream: in a background thread for tests, or as a command.

Synchronous tests (and the official SDKs' synchronous clients) need the mock
serving while the test thread blocks, so it gets its own event loop in a
daemon thread; everything the handle does crosses into that loop, because
the mock's state belongs to it.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from .server import MockUpstream

T = TypeVar("T")
_CALL_TIMEOUT_SECONDS = 10.0


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class MockUpstreamHandle:
    """A MockUpstream serving from its own thread; safe to use from any other thread."""

    def __init__(self, mock: MockUpstream, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.mock = mock
        self._loop = loop
        self._thread = thread

    @property
    def port(self) -> int:
        return self.mock.port

    @property
    def url(self) -> str:
        return self.mock.url

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the recorded requests, as plain dicts (the `/_mock/requests` JSON)."""
        return self._call(lambda: msgspec.to_builtins(self.mock.requests))

    def reset(self) -> None:
        """Forget recorded requests and rate-limit windows."""
        self._call(self.mock.reset)

    def revive(self, key: str) -> None:
        """Make a refused key (revoked, out of quota...) good again, as `POST /_mock/keys/{key}/revive` does."""
        self._call(lambda: self.mock.revive(key))

    def revoke(self, key: str) -> None:
        """Make a good key refused as revoked from now on."""
        self._call(lambda: self.mock.revoke(key))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.mock.stop(), self._loop).result(_CALL_TIMEOUT_SECONDS)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT_SECONDS)

    def __enter__(self) -> MockUpstreamHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, function: Callable[[], T]) -> T:
        """Run `function` on the mock's loop, where its state lives; directly once the loop has ended."""
        if not self._thread.is_alive():
            return function()

        async def on_loop() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(_CALL_TIMEOUT_SECONDS)


def run_mock_upstream_in_thread(**kwargs: Any) -> MockUpstreamHandle:
    """Start a MockUpstream (same keyword arguments) on its own loop in a daemon thread.

    Returns once it is listening; a failure to bind is raised here, not lost in the thread.
    """
    mock = MockUpstream(**kwargs)
    loop = _new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(mock.start())
        except BaseException as error:  # handed to the starting thread below
            failure.append(error)
            started.set()
            loop.close()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, name="mock-upstream", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    return MockUpstreamHandle(mock, loop, thread)


def main(argv: list[str] | None = None) -> None:
    """Run the mock upstream until interrupted (`python -m fake_upstream`)."""
    parser = argparse.ArgumentParser(prog="mock-upstream", description="A fake OpenAI and Anthropic API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before every answer")
    parser.add_argument("--tokens-per-sec", type=float, default=0.0, help="stream pacing; 0 = unpaced")
    parser.add_argument("--output-tokens", type=int, default=16, help="default completion length")
    parser.add_argument("--rpm", type=int, default=0, help="default per-key requests per minute; 0 = none")
    args = parser.parse_args(argv)
    mock = MockUpstream(
        args.host,
        args.port,
        latency_ms=args.latency_ms,
        tokens_per_sec=args.tokens_per_sec,
        output_tokens=args.output_tokens,
        rpm=args.rpm,
    )

    async def serve_forever() -> None:
        await mock.start()
        print(f"mock upstream listening on {mock.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await mock.stop()

    loop = _new_event_loop()
    try:
        loop.run_until_complete(serve_forever())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
