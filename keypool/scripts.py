"""The key pool's Lua scripts, each with the candidate library (`candidates.lua`) in front.

Every script that changes a key's state files the key through the same
`file_key`, and every script that compares times reads the store's clock
through the same `store_now`, so no two scripts can disagree on either.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).parent


@cache
def script_source(name: str, folder: Path = _HERE) -> str:
    """The text of `{folder}/{name}` (default: keypool's own), prefixed with the candidate library."""
    return (_HERE / "candidates.lua").read_text() + "\n" + (folder / name).read_text()
