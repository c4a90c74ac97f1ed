"""The key pool's Lua scripts, each with the candidate library (`candidates.lua`) in front.

Every script that changes a key's state files the key through the same
`file_key`, and every script that compares times reads the store's clock
through the same `store_now`, so no two scripts can disagree on either.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

_HERE = Path(__file__).parent


@cache
def script_source(name: str, folder: Path = _HERE) -> str:
    """The text of `{folder}/{name}` (default: keypool's own), prefixed with the candidate library."""
    return (_HERE / "candidates.lua").read_text() + "\n" + (folder / name).read_text()


def started(script: Any) -> Callable[[Sequence[Any], Sequence[Any]], asyncio.Future[Any]]:
    """How a registered script is run on the hot path: `run(keys, args)` sends it now and gives its answer's future.

    Over the script link (`gateway/script_link.py`) that is `Script.start`: no task, and the call goes out
    even if its caller is cancelled before the answer. On a redis-py client (the embedded store, sentinels,
    a cluster) it is a task started now, which carries the call as far as the client does.
    """
    start = getattr(script, "start", None)
    if start is not None:
        return start
    return lambda keys, args: asyncio.ensure_future(script(keys=keys, args=args))


def unique_ids() -> Iterator[str]:
    """Ids no other process makes (a random prefix of this process's, then a count): a lease's, a request's in the
    limiter's windows. One random draw per process, not one system call per request."""
    return map(f"{secrets.token_hex(4)}{{:x}}".format, itertools.count())
