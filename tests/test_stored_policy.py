"""The holder of a policy kept in the store (gateway/stored_policy.py), which the blocked lists and the prompt filter
share: a change in the store reaches the process, a removed key means the settings' value, and an unreadable
document or a store that is away keeps the value in force."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest

from gateway.store import open_store
from gateway.stored_policy import StoredPolicy


def _parse(data: Any) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ValueError("expected a list of strings")
    return tuple(data)


class _Holder:
    """What an owner (Blocks, PromptFilter) does with each new value: here, remember it and say so."""

    def __init__(self, store: Any, key: str) -> None:
        self.used: asyncio.Queue[tuple[str, ...]] = asyncio.Queue()
        self.stored = StoredPolicy(store, key, default=("settings",), parse=_parse, as_json=list,
                                   use=self.used.put_nowait, interval_sec=0.01, name="test-stored-policy",
                                   what="test lists", log=logging.getLogger("poolgate.test"))

    async def next_value(self) -> tuple[str, ...]:
        return await asyncio.wait_for(self.used.get(), 5)


class _AwayStore:
    """A store that can be taken away: every call fails while `away` is set."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.away = False
        self.asked = asyncio.Event()

    async def get(self, key: str) -> Any:
        self.asked.set()
        if self.away:
            raise ConnectionError("the store went away")
        return await self._store.get(key)

    async def set(self, key: str, value: str) -> Any:
        return await self._store.set(key, value)


async def test_a_change_in_the_store_reaches_the_process_and_a_removed_key_means_the_settings_value(
    store_url: str,
) -> None:
    store = open_store(store_url)
    key = f"poolgate-test:{uuid.uuid4().hex}:policy"
    holder = _Holder(store, key)
    try:
        assert await holder.next_value() == ("settings",)  # before start: the settings' value
        await holder.stored.start()
        await store.set(key, json.dumps(["another", "process"]))  # as another process's replace does
        assert await holder.next_value() == ("another", "process")
        await store.delete(key)
        assert await holder.next_value() == ("settings",)
        await holder.stored.replace(("here",))
        assert holder.used.get_nowait() == ("here",)  # at once, not after the next read
        assert json.loads(await store.get(key)) == ["here"]
    finally:
        await holder.stored.stop()
        await store.delete(key)
        await store.aclose()


async def test_an_unreadable_document_keeps_the_value_in_force_and_says_so(
    store_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    inner = open_store(store_url)
    store = _AwayStore(inner)
    key = f"poolgate-test:{uuid.uuid4().hex}:policy"
    await inner.set(key, json.dumps(["first"]))
    holder = _Holder(store, key)
    try:
        with caplog.at_level(logging.WARNING, logger="poolgate.test"):
            await holder.stored.start()
            assert [await holder.next_value(), await holder.next_value()] == [("settings",), ("first",)]
            for unreadable in (json.dumps({"not": "a list"}), "{not json"):
                await inner.set(key, unreadable)
                for _ in range(2):  # a read begun after the write has finished once the next one begins
                    store.asked.clear()
                    await asyncio.wait_for(store.asked.wait(), 5)
            await inner.set(key, json.dumps(["second"]))
            assert await holder.next_value() == ("second",)  # nothing was used in between
        assert [r.getMessage() for r in caplog.records] == [
            "the stored test lists are unreadable (expected a list of strings); keeping the test lists in force",
            "the stored test lists are unreadable (Expecting property name enclosed in double quotes: line 1 "
            "column 2 (char 1)); keeping the test lists in force",
        ]
    finally:
        await holder.stored.stop()
        await inner.delete(key)
        await inner.aclose()


async def test_a_store_that_is_away_keeps_the_value_in_force_until_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner = open_store("")
    store = _AwayStore(inner)
    key = "poolgate-test:policy"
    await inner.set(key, json.dumps(["first"]))
    store.away = True
    holder = _Holder(store, key)
    with caplog.at_level(logging.WARNING, logger="poolgate.test"):
        await holder.stored.start()  # the store is away at start: the settings' value, and start does not fail
        assert await holder.next_value() == ("settings",)
        store.asked.clear()
        await asyncio.wait_for(store.asked.wait(), 5)  # a background read failed ...
        store.asked.clear()
        await asyncio.wait_for(store.asked.wait(), 5)  # ... and the next one too
        assert holder.used.empty()  # the value in force was not replaced by the failures
        store.away = False
        assert await holder.next_value() == ("first",)
    await holder.stored.stop()
    assert [r.getMessage() for r in caplog.records] == ["cannot read the test lists from the store: ConnectionError"]
    await inner.aclose()
