"""The background step every keeper uses (keypool/repeating.py): it goes on after failures and says so once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keypool.repeating import Repeating


async def test_a_failing_step_is_tried_again_and_warned_about_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = iter(["fail", "fail", "fail", "ok", "fail", "fail"])
    done = asyncio.Event()
    ran: list[str] = []

    async def step() -> None:
        outcome = next(outcomes, "ok")
        ran.append(outcome)
        if len(ran) == 6:
            done.set()
        if outcome == "fail":
            raise ConnectionError("the store went away")

    repeating = Repeating(step, 0.001, name="test-repeating", failure="could not do the thing",
                          log=logging.getLogger("poolgate.test"))
    with caplog.at_level(logging.WARNING, logger="poolgate.test"):
        repeating.start()
        repeating.start()  # a second start does not start a second task
        await asyncio.wait_for(done.wait(), 5)
        await repeating.stop()
    assert ran[:6] == ["fail", "fail", "fail", "ok", "fail", "fail"]
    assert [r.getMessage() for r in caplog.records] == ["could not do the thing: ConnectionError"] * 2
    await repeating.stop()  # stopping twice is fine


async def test_stop_ends_the_task_between_steps() -> None:
    ran = 0
    three = asyncio.Event()

    async def step() -> None:
        nonlocal ran
        ran += 1
        if ran == 3:
            three.set()

    repeating = Repeating(step, 0.001, name="test-repeating", failure="x", log=logging.getLogger("poolgate.test"))
    repeating.start()
    await asyncio.wait_for(three.wait(), 5)
    await repeating.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "test-repeating"]


async def test_a_callable_interval_is_asked_before_each_wait() -> None:
    waits = iter([3.0, 0.0, 60.0])
    slept: list[float] = []
    ran = 0
    three = asyncio.Event()

    async def sleep(seconds: float) -> None:  # a test's clock: no real waiting
        slept.append(seconds)
        await asyncio.sleep(0)

    async def step() -> None:
        nonlocal ran
        ran += 1
        if ran == 3:
            three.set()

    repeating = Repeating(step, lambda: next(waits, 1.0), name="test-repeating", failure="x",
                          log=logging.getLogger("poolgate.test"), sleep=sleep)
    repeating.start()
    await asyncio.wait_for(three.wait(), 5)
    await repeating.stop()
    assert slept[:3] == [3.0, 0.0, 60.0]
