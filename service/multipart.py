"""A strict multipart/form-data parser over a body held in memory (RFC 7578 over RFC 2046).

The request middleware bounds the body, so the whole form is parsed from one ``bytes`` object with
``bytes.find``: no per-byte Python callbacks and no temporary files. Every search starts where the previous
one ended, so parsing is linear in the body's length, and each part's content is sliced once.

Convention: a delimiter is ``CRLF --boundary`` (the body's very first one may omit the CRLF); the CRLF
before a delimiter belongs to the delimiter, not to the part before it. Whatever precedes the first
delimiter (the preamble) and follows the closing ``--boundary--`` (the epilogue) is ignored. Header names
are case-insensitive; header values are decoded as UTF-8 with ``errors="replace"`` (browsers send raw UTF-8
file names). Any malformed input raises :class:`MultipartError`, and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["FormPart", "MultipartError", "boundary_of", "parse_form"]

#: Characters RFC 2046 allows in a boundary (``bchars``); it must not end with a space.
_BOUNDARY_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")
_MAX_BOUNDARY = 70
_CRLF = b"\r\n"
_BLANK_LINE = b"\r\n\r\n"
_PADDING = b" \t"
_PADDING_RUN = re.compile(rb"[ \t]*")
#: Charsets accepted in an RFC 5987 ``filename*`` value.
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1", "us-ascii": "ascii"}


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart/form-data body.

    Attributes:
        name: the ``name`` parameter of the part's Content-Disposition (a part without one is refused).
        filename: the ``filename`` (``filename*`` wins when both are sent); None for a plain field, and
            ``""`` is possible (a file input submitted with no file).
        content_type: the part's Content-Type header value as sent, stripped (``""`` if absent).
        data: the part's content (for a field, its value still encoded).
    """

    name: str
    filename: str | None
    content_type: str
    data: bytes

    @property
    def is_file(self) -> bool:
        """Whether the part is a file (it has a ``filename`` or ``filename*`` parameter)."""
        return self.filename is not None


class MultipartError(ValueError):
    """A malformed or over-limit multipart body; the message is one user-facing sentence."""

    @property
    def message(self) -> str:
        """The user-facing message."""
        return str(self.args[0]) if self.args else ""


def boundary_of(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type header value.

    The boundary parameter may be a quoted string or a bare token; it must hold 1 to 70 characters of
    RFC 2046's ``bchars`` and must not end with a space. Parameter names and the media type are
    case-insensitive; the boundary itself is returned as sent.

    Raises:
        MultipartError: the type is not multipart/form-data, or the boundary is missing or invalid.
    """
    kind, params = _parse_header_params(content_type)
    if kind != "multipart/form-data":
        raise MultipartError(f"the content type is {kind or '(none)'!r}, not multipart/form-data")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("the multipart/form-data content type has no boundary parameter")
    _check_boundary(boundary)
    return boundary


def parse_form(body: bytes, boundary: str, *, max_files: int, max_fields: int) -> list[FormPart]:
    """Split a multipart/form-data body into its parts, in order.

    Args:
        body: the whole request body.
        boundary: the boundary, as :func:`boundary_of` returns it (without the leading ``--``).
        max_files: the most file parts allowed (a part is a file when it has a ``filename`` parameter).
        max_fields: the most non-file parts allowed.

    Returns:
        The parts; each ``data`` is one slice of ``body``.

    Raises:
        MultipartError: an invalid boundary, a malformed body (no opening delimiter, a part whose headers
            never end, a header line without a colon, a part that is not form-data, bytes after a
            delimiter that are neither CRLF nor ``--``), a body that ends before its closing delimiter, or
            more files or fields than allowed.
    """
    _check_boundary(boundary)
    dash_boundary = b"--" + boundary.encode("ascii")
    delimiter = _CRLF + dash_boundary
    if body.startswith(dash_boundary):
        pos = 0
    else:
        pos = body.find(delimiter)
        if pos < 0:
            raise MultipartError("the body has no opening boundary delimiter")
        pos += 2
    parts: list[FormPart] = []
    files = fields = 0
    size = len(body)
    while True:
        # ``pos`` is at ``--boundary``: the closing delimiter, or a delimiter line (padding, CRLF).
        after = pos + len(dash_boundary)
        if body.startswith(b"--", after):
            return parts
        match = _PADDING_RUN.match(body, after)
        line_end = match.end() if match else after  # the pattern matches the empty string: always a match
        if not body.startswith(_CRLF, line_end):
            cut_in_crlf = line_end == size - 1 and body[line_end] == ord("\r")
            if line_end == size or cut_in_crlf or (after == size - 1 and body[after] == ord("-")):
                raise MultipartError("the body ends before the closing boundary delimiter")
            raise MultipartError("unexpected bytes after a boundary delimiter (expected CRLF or '--')")
        start = line_end + 2  # the part's first header line
        next_delimiter = body.find(delimiter, start)
        end = next_delimiter if next_delimiter >= 0 else size
        # Searching from the delimiter line's own CRLF finds a part with no header lines too.
        blank = body.find(_BLANK_LINE, start - 2, end)
        if blank < 0:
            raise MultipartError(f"the headers of part {len(parts) + 1} never end (no blank line)")
        name, filename, content_type = _read_part_headers(body[start:blank] if blank >= start else b"")
        if filename is not None:
            files += 1
            if files > max_files:
                raise MultipartError(f"too many files: the limit is {max_files}")
        else:
            fields += 1
            if fields > max_fields:
                raise MultipartError(f"too many fields: the limit is {max_fields}")
        if next_delimiter < 0:
            if filename is not None:
                raise MultipartError("the body ends inside a file part (an incomplete upload)")
            raise MultipartError("the body ends inside a field part, before the closing boundary delimiter")
        parts.append(FormPart(name, filename, content_type, body[blank + 4 : next_delimiter]))
        pos = next_delimiter + 2


def _check_boundary(boundary: str) -> None:
    """Raise MultipartError unless ``boundary`` is a valid RFC 2046 boundary."""
    if not 1 <= len(boundary) <= _MAX_BOUNDARY:
        raise MultipartError(f"the multipart boundary must hold 1 to 70 characters, not {len(boundary)}")
    if not _BOUNDARY_CHARS.issuperset(boundary) or boundary.endswith(" "):
        raise MultipartError("the multipart boundary holds characters that RFC 2046 does not allow")


def _read_part_headers(block: bytes) -> tuple[str, str | None, str]:
    """The (name, filename, content type) of a part's header block (its lines without the blank line)."""
    disposition: str | None = None
    content_type: str | None = None
    if block:
        for line in block.split(_CRLF):
            colon = line.find(b":")
            if colon < 0:
                raise MultipartError("a part header line has no colon")
            key = line[:colon].strip(_PADDING).lower()
            if key == b"content-disposition":
                if disposition is None:
                    disposition = line[colon + 1 :].decode("utf-8", "replace")
            elif key == b"content-type" and content_type is None:
                content_type = line[colon + 1 :].strip(_PADDING).decode("utf-8", "replace")
    if disposition is None:
        raise MultipartError("a part has no Content-Disposition header")
    kind, params = _parse_header_params(disposition)
    if kind != "form-data":
        raise MultipartError(f"a part's Content-Disposition is {kind or '(empty)'!r}, not form-data")
    if "name" not in params:  # RFC 7578, 4.2: every part has a name
        raise MultipartError("a part's Content-Disposition has no name parameter")
    filename = params.get("filename")
    extended = params.get("filename*")
    if extended is not None:
        decoded = _decode_ext_value(extended)
        filename = decoded if decoded is not None else filename
    return params["name"], filename, content_type or ""


def _parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``type; key=value; key="quoted \\" value"`` into the lower-cased type and its parameters.

    Keys are lower-cased; the first occurrence of a key wins. Quoted strings undo the escapes ``\\"`` and
    ``\\\\`` only (other backslashes are kept, as browsers do not escape them); unquoted values are
    stripped. A segment without ``=`` is ignored.
    """
    semi = value.find(";")
    kind = (value if semi < 0 else value[:semi]).strip(" \t").lower()
    params: dict[str, str] = {}
    size = len(value)
    while semi >= 0:
        start = semi + 1
        semi = value.find(";", start)
        segment_end = semi if semi >= 0 else size
        eq = value.find("=", start, segment_end)
        if eq < 0:
            continue
        key = value[start:eq].strip(" \t").lower()
        at = eq + 1
        while at < size and value[at] in " \t":
            at += 1
        if at < size and value[at] == '"':
            text, closing = _read_quoted(value, at + 1)
            semi = value.find(";", closing + 1)
        else:
            text = value[at:segment_end].strip(" \t")
        params.setdefault(key, text)
    return kind, params


def _read_quoted(value: str, start: int) -> tuple[str, int]:
    """The quoted string starting at ``start`` (just past its opening quote) and its closing quote's index."""
    closing = value.find('"', start)
    if closing >= 0 and value.find("\\", start, closing) < 0:
        return value[start:closing], closing
    chars: list[str] = []
    at = start
    size = len(value)
    while at < size:
        char = value[at]
        if char == '"':
            return "".join(chars), at
        if char == "\\" and at + 1 < size and value[at + 1] in '"\\':
            at += 1
            char = value[at]
        chars.append(char)
        at += 1
    raise MultipartError("a header parameter has an unterminated quoted string")


def _decode_ext_value(value: str) -> str | None:
    """Decode an RFC 5987 ``charset'language'percent-encoded`` value; None if malformed or unsupported."""
    pieces = value.split("'", 2)
    if len(pieces) != 3:
        return None
    encoding = _EXT_CHARSETS.get(pieces[0].strip().lower())
    if encoding is None:
        return None
    return unquote(pieces[2], encoding=encoding, errors="replace")
