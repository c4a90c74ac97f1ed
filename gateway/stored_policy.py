"""A policy an admin may change at run time, kept as one JSON document in the store and in step in every process.

The blocked lists (gateway/blocks.py) and the prompt filter's rules
(gateway/prompt_filter.py) are each such a document: the settings give the
value at first start; `replace` writes a new one to the store and uses it here
at once; every process re-reads the key every `interval_sec` in the background
(one GET, skipped when the bytes are the ones already in force), so a change
takes effect everywhere within about that long and the hot path never asks the
store. A key that is gone means the settings' value again; a document that
does not parse, or a store that is away, keeps the value in force.

What the value means (matching addresses, matching phrases) stays with its
owner: this holder only knows the key, how to read the JSON (`parse`, raising
ValueError), how to write it (`as_json`) and whom to hand a new value (`use`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from keypool.repeating import Repeating

Value = TypeVar("Value")


class StoredPolicy(Generic[Value]):
    """One store key's JSON document as a value of this process, re-read every `interval_sec`."""

    def __init__(
        self, store: Any, key: str, *, default: Value, parse: Callable[[Any], Value],
        as_json: Callable[[Value], Any], use: Callable[[Value], None], interval_sec: float, name: str,
        what: str, log: logging.Logger,
    ) -> None:
        self._store = store
        self._key = key
        self._default = default
        self._parse = parse
        self._as_json = as_json
        self._use = use
        self._what = what  # e.g. "policy lists": what the warnings name
        self._log = log
        self._raw: bytes | None = None
        self._watch = Repeating(self._refresh, interval_sec, name=name,
                                failure=f"cannot read the {what} from the store", log=log)
        use(default)

    async def replace(self, value: Value) -> None:
        """Store a new value (every process picks it up) and use it here at once."""
        await self._store.set(self._key, json.dumps(self._as_json(value)))
        self._use(value)

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # a store that is away now: the settings' value until it is back
            await self._refresh()
        self._watch.start()  # then re-read every interval; a failure keeps the value in force

    async def stop(self) -> None:
        await self._watch.stop()

    async def _refresh(self) -> None:
        raw = await self._store.get(self._key)
        if raw == self._raw:
            return
        self._raw = raw
        if raw is None:
            self._use(self._default)
            return
        try:
            self._use(self._parse(json.loads(raw)))
        except ValueError as error:  # only the admin API writes it; keep what is in force
            self._log.warning("the stored %s are unreadable (%s); keeping the %s in force", self._what, error,
                              self._what)
