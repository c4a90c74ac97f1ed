"""Taking a key out of whatever upstream sends back, before a client can see it.

An upstream (or an OpenAI-compatible server behind `OPENAI_BASE_URL`) may echo
the key it was called with: in a header, a 200 body, an error body, an event in
the middle of a stream. Every header value, body and event poolgate passes on
goes through a `SecretScrubber` for the key that was used. It finds the key as
written and in the forms encoders write it: JSON `\\u`-escapes (whole or for
some characters), `\\/` for a `/`, URL-encoding (`%XX`), and base64, standard
or URL-safe, at any alignment (HTTP Basic credentials, tokens).

The common case, a reply that holds no key, costs a few substring searches
(`bytes in bytes`, each a fast scan) and no decoding: the escape-aware
pattern only runs when the data holds an escape (`\\u00`, `\\/` or `%`).
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache

REDACTED = b"***"
# Base64 of fewer key bytes than this could turn up by chance in unrelated base64 (embeddings, images).
_MIN_BASE64_CHARS = 16


class SecretScrubber:
    """Replaces one key, in every form it may take in upstream's text, with `***`."""

    __slots__ = ("_escaped", "_masked", "_plain", "_secret", "_shortest")
    _escaped: re.Pattern[bytes] | None

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        # The whole key first; then encodings of it that contain no escape marker.
        plain = [self._secret, *_base64_forms(self._secret)]
        self._plain = tuple(dict.fromkeys(form for form in plain if form))
        # Nothing shorter than this can hold any form (an escaped key is longer than the key).
        self._shortest = min((len(form) for form in self._plain), default=0)
        # Compiled only for a text that holds the key escaped: compiling costs about a millisecond, and a
        # pool of thousands of keys cycles through more scrubbers than the cache below keeps.
        self._escaped = None
        # The masked forms providers write in their own errors (`sk-proj-****abcd`, `...abcd`).
        masked = (f"...{secret[-4:]}".encode(), self._secret[:8])
        self._masked = tuple(form for form in masked if len(form) >= 6)

    def scrub(self, data: bytes) -> bytes:
        """`data` with every form of the key replaced; the same object when it held none."""
        if not self._secret or len(data) < self._shortest:  # most header values
            return data
        for form in self._plain:
            if form in data:
                data = data.replace(form, REDACTED)
        if _may_hold_escapes(data) and self._secret in _unescaped(data):
            if self._escaped is None:
                self._escaped = _escaped_pattern(self._secret)
            data = self._escaped.sub(REDACTED, data)
        return data

    def scrub_error(self, data: bytes) -> bytes:
        """An error body: also the masked forms, which upstream writes in "incorrect API key" messages."""
        data = self.scrub(data)
        for form in self._masked:
            if form in data:
                data = data.replace(form, REDACTED)
        return data


@lru_cache(maxsize=4096)
def scrubber_for(secret: str) -> SecretScrubber:
    """The scrubber for a key; built once per key, since a pool has few keys and each is used often."""
    return SecretScrubber(secret)


def scrub_secret(body: bytes, secret: str) -> bytes:
    """Remove a key from an upstream error body, whole, encoded, or in the masked forms providers echo."""
    return scrubber_for(secret).scrub_error(body) if secret else body


def _may_hold_escapes(data: bytes) -> bool:
    # A backslash or `%` is a one-byte scan; only text with one is searched for the longer markers.
    if b"%" in data:
        return True
    return b"\\" in data and (b"\\u00" in data or b"\\/" in data)


# Every escape `_escaped_pattern` accepts for a byte: JSON's `\u00XX`, `%XX`, and JSON's `\/`.
_ESCAPE = re.compile(rb"\\u00([0-9a-fA-F]{2})|%([0-9a-fA-F]{2})|\\(/)")


def _unescaped(data: bytes) -> bytes:
    """`data` with those escapes decoded: it holds the key exactly where `_escaped_pattern` would match it."""
    return _ESCAPE.sub(lambda m: m[3] or bytes([int(m[1] or m[2], 16)]), data)


def _base64_forms(secret: bytes) -> list[bytes]:
    """What base64 of any text holding the key must contain, for each of the three alignments.

    Base64 encodes 3-byte groups; whatever precedes the key, the key's bytes from the first group
    boundary inside it, in whole groups, always encode to the same characters.
    """
    forms = []
    for skip in range(3):
        part = secret[skip:]
        part = part[: len(part) // 3 * 3]
        encoded = base64.b64encode(part)
        if len(encoded) >= _MIN_BASE64_CHARS:
            forms.append(encoded)
            forms.append(encoded.replace(b"+", b"-").replace(b"/", b"_"))  # the URL-safe alphabet
    return forms


def _escaped_pattern(secret: bytes) -> re.Pattern[bytes]:
    """Each byte of the key as itself, as a JSON `\\u00XX`, as `%XX`, and a `/` also as JSON's `\\/`."""
    parts = []
    for byte in secret:
        char = bytes([byte])
        code = _any_case(b"%02x" % byte)
        options = [re.escape(char), rb"\\u00" + code, b"%" + code]
        if char == b"/":
            options.append(rb"\\/")
        parts.append(b"(?:" + b"|".join(options) + b")")
    return re.compile(b"".join(parts))


def _any_case(hex_digits: bytes) -> bytes:
    """Hex digits matching in either case (`2f` or `2F`), the key's own letters staying exact."""
    return b"".join(b"[%c%c]" % (d, d - 32) if d >= ord("a") else bytes([d]) for d in hex_digits)
