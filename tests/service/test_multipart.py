"""service.multipart: bodies from httpx and by hand, every error, Starlette parity, and a fuzz property."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from service.multipart import FormPart, MultipartError, boundary_of, parse_form

B = "sep"  # the boundary of hand-built bodies
LIMITS = {"max_files": 32, "max_fields": 100}


def build(files: list[Any] | None = None, data: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A body and its Content-Type as httpx itself builds them."""
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def parse_httpx(
    files: list[Any] | None = None, data: dict[str, str] | None = None, **limits: int
) -> list[FormPart]:
    body, content_type = build(files, data)
    return parse_form(body, boundary_of(content_type), **{**LIMITS, **limits})


def parse(body: bytes, **limits: int) -> list[FormPart]:
    return parse_form(body, B, **{**LIMITS, **limits})


def part(headers: str, content: bytes = b"") -> bytes:
    """One hand-built part (without its delimiter): header lines, a blank line, the content."""
    return headers.encode() + b"\r\n\r\n" + content


def form(*parts: bytes) -> bytes:
    """A hand-built body of ``parts`` delimited by ``--sep``, closed."""
    return b"".join(b"--sep\r\n" + p + b"\r\n" for p in parts) + b"--sep--\r\n"


FILE_HEADERS = 'Content-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png'
FIELD_HEADERS = 'Content-Disposition: form-data; name="k"'


@pytest.fixture(scope="module")
def pngs(gtsrb_dir: Path) -> list[bytes]:
    """A few real GTSRB test images (PNG bytes, ~1-6 kB each)."""
    paths = sorted((gtsrb_dir / "test_originals").glob("*.png"))[:4]
    assert len(paths) == 4
    return [path.read_bytes() for path in paths]


# -- boundary_of -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc123", "abc123"),
        ('multipart/form-data; boundary="a b\'()+_,-./:=?"', "a b'()+_,-./:=?"),
        ("Multipart/Form-Data ; charset=utf-8; BOUNDARY=x", "x"),
        (
            "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
            "----WebKitFormBoundary7MA4YWxkTrZu0gW",
        ),
        ("multipart/form-data; boundary=" + "z" * 70, "z" * 70),
    ],
)
def test_boundary_of(content_type: str, boundary: str) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("multipart/form-data", "no boundary parameter"),
        ("multipart/form-data; charset=utf-8", "no boundary parameter"),
        ("multipart/form-data; boundary=", "1 to 70 characters, not 0"),
        ('multipart/form-data; boundary=""', "1 to 70 characters, not 0"),
        ("multipart/form-data; boundary=" + "z" * 71, "1 to 70 characters, not 71"),
        ('multipart/form-data; boundary="ab "', "does not allow"),
        ('multipart/form-data; boundary=a"b', "does not allow"),
        ("multipart/form-data; boundary=caf\u00e9", "does not allow"),
        ('multipart/form-data; boundary="abc', "unterminated quoted string"),
        ("image/png; boundary=abc", "not multipart/form-data"),
        ("", "not multipart/form-data"),
    ],
)
def test_boundary_of_refuses(content_type: str, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        boundary_of(content_type)


# -- bodies built by httpx ---------------------------------------------------------------------------------


def test_one_file(pngs: list[bytes]) -> None:
    parts = parse_httpx(files=[("file", ("00005.png", pngs[0], "image/png"))])
    assert parts == [FormPart("file", "00005.png", "image/png", pngs[0])]
    assert parts[0].is_file


def test_several_files(pngs: list[bytes]) -> None:
    files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
    parts = parse_httpx(files=files)
    assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [
        ("file", f"{i}.png", "image/png", png) for i, png in enumerate(pngs)
    ]


def test_files_and_fields(pngs: list[bytes]) -> None:
    parts = parse_httpx(
        files=[("a", ("a.png", pngs[0], "image/png")), ("b", ("b.bin", pngs[1]))],
        data={"top_k": "3", "note": "caf\u00e9"},
    )
    fields = [(p.name, p.data) for p in parts if not p.is_file]
    files = [(p.name, p.filename, p.content_type, p.data) for p in parts if p.is_file]
    assert fields == [("top_k", b"3"), ("note", "caf\u00e9".encode())]
    assert files == [
        ("a", "a.png", "image/png", pngs[0]),
        ("b", "b.bin", "application/octet-stream", pngs[1]),
    ]
    assert all(p.content_type == "" and p.filename is None for p in parts if not p.is_file)


def test_utf8_and_escaped_file_names() -> None:
    name = "Stra\u00dfe \u9053\u8def \\ back.png"
    parts = parse_httpx(files=[("file", (name, b"x", "image/png"))])
    assert parts[0].filename == name  # httpx sends raw UTF-8 and escapes the backslash as \\
    quoted = parse_httpx(files=[("file", ('say "hi".png', b"x", "image/png"))])
    assert quoted[0].filename == "say %22hi%22.png"  # httpx (like browsers) percent-encodes the quote


def test_empty_file() -> None:
    parts = parse_httpx(files=[("file", ("empty.png", b"", "image/png"))])
    assert parts == [FormPart("file", "empty.png", "image/png", b"")]


def test_no_parts_but_closing_delimiter() -> None:
    assert parse(b"--sep--\r\n") == []
    assert parse(b"--sep--") == []


# -- bodies built by hand ----------------------------------------------------------------------------------


def test_filename_star_wins() -> None:
    headers = (
        'Content-Disposition: form-data; name="f"; filename="fallback.png"; '
        "filename*=UTF-8''%E2%82%AC%20rates.png"
    )
    assert parse(form(part(headers, b"x")))[0].filename == "\u20ac rates.png"
    only_star = "Content-Disposition: form-data; name=f; filename*=utf-8'en'a%2Fb.png"
    only = parse(form(part(only_star, b"x")))[0]
    assert (only.name, only.filename, only.is_file) == ("f", "a/b.png", True)
    latin = "Content-Disposition: form-data; name=f; filename*=ISO-8859-1''caf%E9.png"
    assert parse(form(part(latin)))[0].filename == "caf\u00e9.png"
    unknown = "Content-Disposition: form-data; name=f; filename=\"plain.png\"; filename*=KOI8-R''%C1.png"
    assert parse(form(part(unknown)))[0].filename == "plain.png"


def test_quoted_and_token_parameters() -> None:
    headers = (
        'content-disposition:form-data;name=file;filename="a\\"b\\\\c\\d.png"  \r\nCONTENT-TYPE: image/jpeg '
    )
    assert parse(form(part(headers, b"data"))) == [FormPart("file", 'a"b\\c\\d.png', "image/jpeg", b"data")]


def test_raw_utf8_header_and_invalid_utf8_is_replaced() -> None:
    headers = b'Content-Disposition: form-data; name="f"; filename="\xe9\xc3\xa9.png"'
    parts = parse(b"--sep\r\n" + headers + b"\r\n\r\nx\r\n--sep--")
    assert parts[0].filename == "\ufffd\u00e9.png"


def test_file_input_sent_without_a_file() -> None:
    parts = parse(form(part('Content-Disposition: form-data; name="file"; filename=""', b"")))
    assert parts == [FormPart("file", "", "", b"")]
    assert parts[0].is_file


def test_preamble_epilogue_and_padding() -> None:
    body = (
        b"This is the preamble; --sep is not a delimiter here.\r\n"
        b"--sep \t \r\n"
        + part(FIELD_HEADERS, b"v")
        + b"\r\n--sep\t\r\n"
        + part(FILE_HEADERS, b"\r\n--se\r\n")
    ) + b"\r\n--sep-- \r\nepilogue --sep\r\nmore garbage"
    parts = parse(body)
    assert [(p.name, p.data) for p in parts] == [("k", b"v"), ("file", b"\r\n--se\r\n")]


def test_content_holding_crlf_and_boundary_lookalikes() -> None:
    content = b"\r\n\r\n--se\r\n-sep\r\n--Sep\r\nx--sep--\r\n\n--sep\r\n\r--sep\r\n"
    parts = parse(form(part(FILE_HEADERS, content), part(FIELD_HEADERS, content)))
    assert [(p.name, p.data) for p in parts] == [("file", content), ("k", content)]


def test_quoted_boundary_with_space_and_specials() -> None:
    content_type = 'multipart/form-data; boundary="my b(o)und:ary=?"'
    boundary = boundary_of(content_type)
    body = f"--{boundary}\r\n".encode() + part(FIELD_HEADERS, b"v") + f"\r\n--{boundary}--".encode()
    assert parse_form(body, boundary, **LIMITS) == [FormPart("k", None, "", b"v")]


def test_limits() -> None:
    files = [part(FILE_HEADERS, b"x")] * 3
    fields = [part(FIELD_HEADERS, b"x")] * 3
    assert len(parse(form(*files, *fields), max_files=3, max_fields=3)) == 6
    with pytest.raises(MultipartError, match=r"^too many files: the limit is 2$"):
        parse(form(*files), max_files=2)
    with pytest.raises(MultipartError, match=r"^too many fields: the limit is 2$"):
        parse(form(*fields), max_fields=2)
    with pytest.raises(MultipartError, match=r"^too many files: the limit is 0$"):
        parse(form(part(FILE_HEADERS)), max_files=0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "no opening boundary delimiter"),
        (b"no delimiter at all", "no opening boundary delimiter"),
        (b"preamble--sep\r\n" + part(FIELD_HEADERS), "no opening boundary delimiter"),
        (b"--sep\r\n" + FIELD_HEADERS.encode() + b"\r\n--sep--", "headers of part 1 never end"),
        (b"--sep\r\n" + FIELD_HEADERS.encode() + b"\r\n", "headers of part 1 never end"),
        (form(part(FIELD_HEADERS), b"Content-Disposition: form-data\r\n"), "headers of part 2 never end"),
        (form(part(FIELD_HEADERS + "\r\nX-No-Colon")), "header line has no colon"),
        (form(part("Content-Type: image/png", b"x")), "has no Content-Disposition header"),
        (form(b"\r\nx"), "has no Content-Disposition header"),
        (form(part('Content-Disposition: attachment; name="f"')), "'attachment', not form-data"),
        (form(part('Content-Disposition: form-data; name="f')), "unterminated quoted string"),
        (
            b"--sep\r\n" + part(FILE_HEADERS, b"\x89PNG\r\n"),
            "the body ends inside a file part (an incomplete upload)",
        ),
        (b"--sep\r\n" + part(FIELD_HEADERS, b"val"), "the body ends inside a field part"),
        (
            b"--sep\r\n" + part(FIELD_HEADERS, b"v") + b"\r\n--sep",
            "ends before the closing boundary delimiter",
        ),
        (
            b"--sep\r\n" + part(FIELD_HEADERS, b"v") + b"\r\n--sep-",
            "ends before the closing boundary delimiter",
        ),
        (
            b"--sep\r\n" + part(FIELD_HEADERS, b"v") + b"\r\n--sep \r",
            "ends before the closing boundary delimiter",
        ),
        (b"--sep", "ends before the closing boundary delimiter"),
        (b"--sepx\r\n" + part(FIELD_HEADERS) + b"\r\n--sep--", "unexpected bytes after a boundary delimiter"),
        (
            b"--sep \tx\r\n" + part(FIELD_HEADERS) + b"\r\n--sep--",
            "unexpected bytes after a boundary delimiter",
        ),
        (b"--sep\n" + part(FIELD_HEADERS) + b"\r\n--sep--", "unexpected bytes after a boundary delimiter"),
        (form(part(FIELD_HEADERS)).replace(b"--sep--", b"--sep-x"), "unexpected bytes after a boundary"),
    ],
)
def test_errors(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=re.escape(message)) as info:
        parse(body)
    assert "\n" not in info.value.message and "Traceback" not in info.value.message


def test_incomplete_upload_of_a_real_image(pngs: list[bytes]) -> None:
    body, content_type = build(files=[("file", ("a.png", pngs[0], "image/png"))])
    boundary = boundary_of(content_type)
    for cut in (len(body) - len(boundary) - 8, len(body) // 2):
        with pytest.raises(
            MultipartError, match=r"^the body ends inside a file part \(an incomplete upload\)$"
        ):
            parse_form(body[:cut], boundary, **LIMITS)


def test_invalid_boundary_argument() -> None:
    with pytest.raises(MultipartError, match="1 to 70"):
        parse_form(form(), "", **LIMITS)
    with pytest.raises(MultipartError, match="does not allow"):
        parse_form(form(), "s\u00e9p", **LIMITS)


def test_linear_time_on_adversarial_bodies() -> None:
    """Near-delimiters everywhere, or very many tiny parts, still parse in a blink (no quadratic rescans)."""
    lookalikes = b"\r\n--se\r\n\r\n-" * 400_000  # ~4.4 MB of almost-delimiters and blank lines
    many = form(*[part(FIELD_HEADERS, b"v")] * 50_000)  # ~2.7 MB, 50k parts
    started = time.perf_counter()
    assert parse(form(part(FILE_HEADERS, lookalikes)))[0].data == lookalikes
    with pytest.raises(MultipartError, match="incomplete upload"):
        parse(b"--sep\r\n" + part(FILE_HEADERS, lookalikes))
    assert len(parse(many, max_fields=50_000)) == 50_000
    with pytest.raises(MultipartError, match="no opening"):
        parse(lookalikes)
    assert time.perf_counter() - started < 2.0


# -- parity with Starlette's parser ------------------------------------------------------------------------


def starlette_parse(body: bytes, content_type: str) -> list[tuple[str, str | None, str, bytes]]:
    """(name, filename, content type, bytes) of every part, as Starlette's MultiPartParser reads them."""

    async def run() -> list[tuple[str, str | None, str, bytes]]:
        async def stream() -> AsyncGenerator[bytes, None]:
            for at in range(0, len(body), 1000):
                yield body[at : at + 1000]

        headers = Headers({"content-type": content_type})
        parsed = await MultiPartParser(headers, stream(), max_files=32, max_fields=100).parse()
        out: list[tuple[str, str | None, str, bytes]] = []
        try:
            for name, value in parsed.multi_items():
                if isinstance(value, UploadFile):
                    out.append((name, value.filename, value.content_type or "", await value.read()))
                else:
                    out.append((name, None, "", value.encode()))
        finally:
            await parsed.close()
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    "case",
    ["one_file", "several_files", "files_and_fields", "utf8_name", "empty_file", "fields_only"],
)
def test_same_as_starlette(pngs: list[bytes], case: str) -> None:
    cases: dict[str, tuple[list[Any] | None, dict[str, str] | None]] = {
        "one_file": ([("file", ("00005.png", pngs[0], "image/png"))], None),
        "several_files": ([("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(pngs)], None),
        "files_and_fields": (
            [("a", ("a.png", pngs[2], "image/png")), ("b", ("b", pngs[3]))],
            {"top_k": "3", "note": "caf\u00e9\r\nline"},
        ),
        "utf8_name": ([("f", ("\u9053\u8def \u00e9.png", pngs[1], "image/png"))], {"x": ""}),
        "empty_file": (
            [("file", ("empty.png", b"", "image/png")), ("file", ("b.png", b"\r\n", "image/png"))],
            None,
        ),
        "fields_only": (None, {"a": "1", "b": "caf\u00e9"}),
    }
    files, data = cases[case]
    if files is None:  # httpx url-encodes a form without files: build the multipart body by hand
        fields = (data or {}).items()
        body = form(*[part(f'Content-Disposition: form-data; name="{k}"', v.encode()) for k, v in fields])
        content_type = f"multipart/form-data; boundary={B}"
    else:
        body, content_type = build(files, data)
    ours = [
        (p.name, p.filename, p.content_type, p.data)
        for p in parse_form(body, boundary_of(content_type), **LIMITS)
    ]
    assert ours == starlette_parse(body, content_type)
    assert ours  # a non-trivial comparison


# -- fuzz: arbitrary bytes never raise anything but MultipartError -------------------------------------------

VALID = form(
    part(FIELD_HEADERS, b"3"),
    part(FILE_HEADERS, b"\x89PNG\r\n\x1a\n\x00\x00--se\r\n"),
    part("Content-Disposition: form-data; name=f; filename*=UTF-8''%E2%82%AC.png", b""),
)


def parse_or_refuse(body: bytes) -> None:
    try:
        parts = parse(body, max_files=3, max_fields=3)
    except MultipartError as exc:
        assert exc.message and "\n" not in exc.message
    else:
        for p in parts:
            assert isinstance(p.data, bytes) and isinstance(p.content_type, str)
            assert p.data in body


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(body: bytes) -> None:
    parse_or_refuse(body)
    parse_or_refuse(b"--sep\r\n" + body)


@FUZZ
@given(st.integers(min_value=0, max_value=len(VALID)))
def test_fuzz_truncations(cut: int) -> None:
    parse_or_refuse(VALID[:cut])


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 7)), min_size=1, max_size=4))
def test_fuzz_bit_flips(flips: list[tuple[int, int]]) -> None:
    body = bytearray(VALID)
    for at, bit in flips:
        body[at] ^= 1 << bit
    parse_or_refuse(bytes(body))


def test_valid_fuzz_seed_parses() -> None:
    parts = parse(VALID, max_files=3, max_fields=3)
    assert [(p.name, p.filename) for p in parts] == [("k", None), ("file", "a.png"), ("f", "\u20ac.png")]
