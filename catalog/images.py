"""What an image in a prompt costs, in tokens, before any model sees it.

OpenAI (vision chat models) charge by tiles: detail `low` is 85 tokens; `high`
and `auto` scale the image to fit in 2048 x 2048, then so its shortest side is
768, and charge 170 per 512-pixel tile plus 85. Anthropic charges about
width x height / 750, after scaling the long edge down to 1568 pixels.

A data URL's real size is read from the image's header bytes (PNG, JPEG, GIF,
WebP), without decoding the image. An image given by plain URL is never
fetched (counting never touches the network): it is counted as
`UNKNOWN_SIZE`, a 1024 x 1024 image, which is 765 tokens at high detail on
OpenAI (a typical photo's cost; a very long image can cost up to 1,445) and
about 1,399 on Anthropic.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct

UNKNOWN_SIZE = (1024, 1024)
OPENAI_LOW_DETAIL = 85
_HEADER_BASE64_CHARS = 96 * 1024  # enough of the file for any header, even a JPEG with a large EXIF block first


def openai_image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """OpenAI's tile formula."""
    if detail == "low" or width <= 0 or height <= 0:
        return OPENAI_LOW_DETAIL
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 170 * math.ceil(w / 512) * math.ceil(h / 512) + 85


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's documented estimate: width x height / 750, after the long edge is scaled to 1568 at most."""
    scale = min(1.0, 1568 / max(width, height, 1))
    return max(1, math.ceil(width * scale * height * scale / 750))


def image_size(url: str) -> tuple[int, int]:
    """(width, height) of a `data:` URL's image from its header bytes; UNKNOWN_SIZE when it cannot be read."""
    if not url.startswith("data:"):
        return UNKNOWN_SIZE
    _, _, data = url.partition(",")
    return image_size_of_base64(data)


def image_size_of_base64(data: str) -> tuple[int, int]:
    head = data[:_HEADER_BASE64_CHARS]
    head = head[: len(head) - len(head) % 4]
    try:
        raw = base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return UNKNOWN_SIZE
    return header_size(raw) or UNKNOWN_SIZE


def header_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF, JPEG or WebP file, or None."""
    try:
        if raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR":
            w, h = struct.unpack(">II", raw[16:24])
            return w, h
        if raw[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", raw[6:10])
            return w, h
        if raw[:2] == b"\xff\xd8":
            return _jpeg_size(raw)
        if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
            return _webp_size(raw)
    except struct.error:  # a header cut short
        return None
    return None


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    # Walk the marker segments to the first start-of-frame (SOF0..SOF15 but DHT, JPG and DAC).
    i = 2
    while i + 9 < len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        length = struct.unpack(">H", raw[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", raw[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    chunk = raw[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(raw[24:27], "little") + 1
        h = int.from_bytes(raw[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", raw[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None
