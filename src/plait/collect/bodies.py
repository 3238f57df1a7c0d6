"""Request bodies: bounded reads, bounded gzip, JSON."""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from plait.spec import MAX_BATCH_BYTES


class BodyError(Exception):
    """A body the server refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def read_body(receive, limit: int = MAX_BATCH_BYTES) -> bytes:
    """Read an ASGI request body, refusing (413) past ``limit`` bytes without buffering more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyError(400, "client_disconnected", "the client went away mid-body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyError(413, "body_too_large", f"request body exceeds {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decompress(body: bytes, encoding: str, limit: int = MAX_BATCH_BYTES) -> bytes:
    """Undo Content-Encoding gzip/deflate, stopping at ``limit`` bytes (a gzip bomb is a 413)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BodyError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported"
        )
    out = bytearray()
    rest = body
    while True:  # a gzip body may hold several members, one after the other
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BodyError(400, "invalid_gzip", f"body is not valid {encoding}: {exc}") from None
        if len(out) > limit:
            raise BodyError(413, "body_too_large", f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise BodyError(400, "invalid_gzip", f"body is truncated {encoding}")
        rest = inflater.unused_data
        if not rest or encoding == "deflate":
            return bytes(out)


def parse_json(body: bytes) -> Any:
    if not body:
        raise BodyError(400, "invalid_json", "request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses invalid UTF-8 and nesting deeper than 1024 here.
        raise BodyError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
