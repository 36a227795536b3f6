"""Multipart uploads parsed in memory as they stream in: no image byte is ever spooled to disk."""

from __future__ import annotations

from typing import Callable

from fastapi import HTTPException, Request


class TooManyFiles(Exception):
    """More file parts than the endpoint accepts."""


class _PartCollector:
    """python-multipart callbacks that keep file parts in memory (bounded by --max-bytes) and skip plain form fields."""

    def __init__(self, max_files: int, parse_options: Callable[[bytes], tuple[bytes, dict[bytes, bytes]]]) -> None:
        self.max_files = max_files
        self.parse_options = parse_options
        self.files: list[bytes] = []
        self._data: bytearray | None = None
        self._name = self._value = self._disposition = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The callback table for python_multipart.MultipartParser."""
        return {
            "on_part_begin": self._begin, "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data, "on_part_end": self._part_end,
        }

    def _begin(self) -> None:
        self._data, self._disposition = None, b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._name.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._name = self._value = b""

    def _headers_finished(self) -> None:
        _, options = self.parse_options(self._disposition)
        if b"filename" in options:  # a file part, as Starlette decides it
            if len(self.files) >= self.max_files:
                raise TooManyFiles()
            self._data = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._data is not None:
            self._data += data[start:end]

    def _part_end(self) -> None:
        if self._data is not None:
            self.files.append(bytes(self._data))
            self._data = None


async def read_multipart_files(request: Request, max_files: int) -> list[bytes]:
    """The file parts of a multipart/form-data body, parsed in memory as it streams in: no byte is spooled to disk."""
    # Starlette's request.form() would spool every part over 1 MiB to a temporary file, and the docs promise
    # that images are never stored; --max-bytes already bounds what this keeps in memory
    try:
        from python_multipart.exceptions import FormParserError
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ModuleNotFoundError:  # python-multipart < 0.0.13 names its package `multipart`
        from multipart.exceptions import FormParserError  # type: ignore[no-redef]
        from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data request without a boundary")
    parts = _PartCollector(max_files, parse_options_header)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (FormParserError, ValueError):
        raise HTTPException(400, "malformed multipart/form-data body") from None
    return parts.files
