"""A minimal HTTP/1.1 keep-alive client over asyncio streams, for the load generator.

Requests are prebuilt byte strings (:func:`multipart_request`), so sending one is a single ``write``; the
response is read to its end (Content-Length or chunked) and only the status is kept. It is far cheaper per
request than a general client, which keeps the load generator off the critical path on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import secrets


class ProtocolError(Exception):
    """The server answered something that is not an HTTP/1.1 response this client understands."""


def multipart_request(
    *, host: str, port: int, path: str, field: str, filename: str, data: bytes, content_type: str
) -> bytes:
    """A complete ``POST path`` request with one multipart/form-data file part, ready to write.

    Args:
        path: request target with its query string, e.g. ``/v1/classify?crop=none``.
        field: the multipart field name (``file``).
        data: the file's bytes (a PNG here).
    """
    boundary = "stnload" + secrets.token_hex(12)
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode(),
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode()
    return head + body


class Connection:
    """One keep-alive connection; :meth:`send` writes a prebuilt request and returns the response status.

    Not safe for concurrent use: each load-generator task owns one connection.
    """

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and read its whole response; returns (status, body).

        Raises:
            OSError, asyncio.IncompleteReadError, ProtocolError: the connection failed; it is closed and the
                next call reconnects.
        """
        try:
            reader, writer = await self._connect()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length, chunked, close = _parse_head(head)
            if chunked:
                body = await _read_chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:  # no framing: the body runs to the end of the connection
                body = await reader.read()
                close = True
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        """Close the socket (no wait); the next :meth:`send` reconnects."""
        if self._writer is not None:
            self._writer.close()
        self._reader = None
        self._writer = None


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, Content-Length or None, chunked, connection closes) of a response head."""
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(status_line[1])
    length: int | None = None
    chunked = False
    close = status_line[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            close = b"close" in value.lower()
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)  # the chunk and its CRLF
        parts.append(chunk[:-2])
