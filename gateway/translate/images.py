"""Images between the two APIs: a data URL <-> a base64 source, its media type read from the bytes.

Claude takes JPEG, PNG, GIF and WebP only, and refuses an image whose declared
type is not what its bytes are; clients often declare `image/jpeg` for
anything. So the type sent is the one the first bytes say, and an image of any
other kind is refused here, in the client's words, before it costs a key.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway.errors import GatewayError

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_media_type(head: bytes) -> str | None:
    """The image type the first bytes of a file announce, among those Claude reads; None for any other."""
    for signature, media_type in _SIGNATURES:
        if head.startswith(signature):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def claude_image(url: str) -> dict[str, Any]:
    """An OpenAI `image_url` as a Claude image block: a data URL becomes a base64 source, a URL a url source."""
    if not url.startswith("data:"):
        if not url.startswith(("https://", "http://")):
            raise GatewayError("invalid_request", "An `image_url` must be an http(s) URL or a base64 data URL.")
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, comma, data = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise GatewayError("invalid_request", "An image data URL must be base64: `data:image/png;base64,...`.")
    try:  # 16 characters are 12 bytes: enough for every signature above
        head = base64.b64decode(data[:16], validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError("invalid_request", "An image data URL does not hold valid base64.") from None
    media_type = sniff_media_type(head)
    if media_type is None:
        raise GatewayError(
            "invalid_request", "Claude reads JPEG, PNG, GIF and WebP images only; this image is none of them."
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def openai_image(source: Any) -> dict[str, Any]:
    """A Claude image source as an OpenAI `image_url` part."""
    if isinstance(source, dict) and source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise GatewayError("invalid_request", "An image block needs a base64 or url `source` to be sent to this model.")
