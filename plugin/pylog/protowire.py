"""Protobuf's wire format, the little of it pylog writes by hand where a message class a line
would cost several times more (OTLP log records, Loki entries, dockerd's frames for `docker
logs`); the tests parse what they write with the official classes."""

from __future__ import annotations

_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def varint(n: int) -> bytes:
    """An unsigned varint (a negative int64 as its two's complement, as protobuf does)."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: int, data: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number << 3 | 2), the length, the bytes."""
    return _ONE_BYTE[tag] + varint(len(data)) + data if tag < 0x80 else \
        varint(tag) + varint(len(data)) + data


def utf8(texts: list[bytes]) -> list[bytes]:
    """The lines as valid UTF-8 (a proto3 string must be; receivers refuse it otherwise): as
    they are when the batch is, else each bad one with U+FFFD."""
    try:
        b"\n".join(texts).decode()
        return texts
    except UnicodeDecodeError:
        return [t.decode("utf-8", "replace").encode() for t in texts]
