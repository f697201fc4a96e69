"""A minimal DER encoder and decoder, enough for CMS SignedData.

``cryptography`` signs and verifies, but it cannot build a CMS signature with
a key that lives in a token (PKCS#11) nor verify one, so the few structures we
need are written and read here.  Only definite-length DER is accepted.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import VerificationError

# Universal tags.
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    # DER orders the elements of a SET OF by their encodings.
    return tlv(SET, b"".join(sorted(items)))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    return tlv((0xA0 if constructed else 0x80) | number, content)


def integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def null() -> bytes:
    return tlv(NULL, b"")


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def utc_time(moment: datetime.datetime) -> bytes:
    moment = moment.astimezone(datetime.UTC)
    if 1950 <= moment.year < 2050:  # RFC 5280 4.1.2.5
        return tlv(UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(GENERALIZED_TIME, moment.strftime("%Y%m%d%H%M%SZ").encode())


@dataclass(frozen=True)
class Element:
    """One decoded TLV: ``raw`` is the whole encoding, ``content`` its value."""

    tag: int
    raw: bytes
    header_len: int

    @property
    def content(self) -> bytes:
        return self.raw[self.header_len :]

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[Element]:
        if not self.constructed:
            raise VerificationError(f"DER: tag 0x{self.tag:02x} is not constructed")
        return list(iter_elements(self.content))

    def fields(self, what: str, at_least: int, at_most: int | None = None) -> list[Element]:
        """The children of a structure that must have *at_least* (and at most *at_most*) of them."""
        items = self.children()
        if len(items) < at_least or (at_most is not None and len(items) > at_most):
            expected = f"{at_least}" if at_most == at_least else f"{at_least}..{at_most if at_most is not None else ''}"
            raise VerificationError(f"DER: {what} has {len(items)} fields, expected {expected}")
        return items

    def expect(self, tag: int, what: str) -> Element:
        if self.tag != tag:
            raise VerificationError(f"DER: expected {what} (tag 0x{tag:02x}), found tag 0x{self.tag:02x}")
        return self

    def as_int(self) -> int:
        self.expect(INTEGER, "INTEGER")
        return int.from_bytes(self.content, "big", signed=True)

    def as_oid(self) -> str:
        self.expect(OID, "OBJECT IDENTIFIER")
        data = self.content
        if not data:
            raise VerificationError("DER: empty OBJECT IDENTIFIER")
        first = data[0]
        parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
        value = 0
        for byte in data[1:]:
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                parts.append(value)
                value = 0
        return ".".join(str(p) for p in parts)


def decode(data: bytes, offset: int = 0) -> tuple[Element, int]:
    """Decode the TLV at ``offset``; return it and the offset after it."""
    if offset + 2 > len(data):
        raise VerificationError("DER: truncated header")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise VerificationError("DER: multi-byte tags are not supported")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise VerificationError("DER: indefinite or oversized length")
        if pos + count > len(data):
            raise VerificationError("DER: truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise VerificationError("DER: element runs past the end of its container")
    return Element(tag, bytes(data[offset:end]), pos - offset), end


def decode_one(data: bytes) -> Element:
    element, end = decode(data)
    if end != len(data):
        raise VerificationError("DER: trailing bytes after the top-level element")
    return element


def iter_elements(data: bytes) -> Iterator[Element]:
    offset = 0
    while offset < len(data):
        element, offset = decode(data, offset)
        yield element
