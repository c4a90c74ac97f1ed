"""The model an upload names: the `model` fields of a multipart form, read by a real parser.

Uploads (audio transcriptions, image edits) are relayed as they are, but the
model they name decides the family, so it is read the way upstream will read
it: every part of the form, however its headers are spelt (quoted or not), not
just the first 64 KB. A form with several `model` fields is refused rather than
guessed at, since upstream might take another one than poolgate checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

_LONGEST_MODEL = 256  # bytes; a longer `model` field is no model name


def form_models(body: bytes, content_type: bytes) -> list[str]:
    """The value of every `model` field of the form, in order; a GatewayError (400) if it is no form."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise GatewayError("invalid_request", "This endpoint takes a multipart/form-data upload with a boundary.")
    reader = _ModelFields()
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError:
        raise GatewayError("invalid_request", "The multipart form could not be read.") from None
    return reader.models


class _ModelFields:
    """Parser callbacks that keep only the `model` fields' values."""

    def __init__(self) -> None:
        self.models: list[str] = []
        self._header_name = b""
        self._header_value = b""
        self._in_model = False
        self._value = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._in_model = False
        self._value.clear()
        self._header_name = self._header_value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            _, params = parse_options_header(self._header_value)
            self._in_model = params.get(b"name", b"").strip().lower() == b"model"
        self._header_name = self._header_value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_model and len(self._value) <= _LONGEST_MODEL:
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._in_model:
            self.models.append(bytes(self._value[: _LONGEST_MODEL + 1]).decode("utf-8", "replace"))
