"""SWUpdate image encryption: AES-256-CBC with PKCS#7 padding.

The key file is SWUpdate's ``-K`` format: one line ``<64 hex key> <32 hex iv>``.
Every encrypted image gets its own IV (sw-description's ``ivt``), derived as
HMAC-SHA256(key, name ‖ SHA-256 of the plaintext): unique per image and
content, yet reproducible, so the same inputs still give the same bundle.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import KeyError_
from .fsutil import read_bytes

BLOCK = 16
_SWUPDATE_LINE = re.compile(r"^\s*([0-9a-fA-F]{64})\s+([0-9a-fA-F]{32})\s*$")
_META_SWUPDATE = re.compile(r"^\s*key\s*=\s*([0-9a-fA-F]{64})\s*\n\s*iv\s*=\s*([0-9a-fA-F]{32})\s*$", re.MULTILINE)


@dataclass(frozen=True)
class AesKey:
    key: bytes
    iv: bytes  # the file's default IV; images carry their own ``ivt``

    def to_swupdate(self) -> bytes:
        return f"{self.key.hex()} {self.iv.hex()}\n".encode()


def generate() -> AesKey:
    return AesKey(os.urandom(32), os.urandom(16))


def load(path: Path) -> AesKey:
    """Read SWUpdate's one-line format (or meta-swupdate's ``key=``/``iv=`` lines)."""
    text = read_bytes(path, "AES key file").decode("ascii", "replace")
    match = _SWUPDATE_LINE.match(text) or _META_SWUPDATE.search(text)
    if not match:
        raise KeyError_(f"{path}: not an AES-256 key file (expected '<64 hex key> <32 hex iv>')")
    return AesKey(bytes.fromhex(match.group(1)), bytes.fromhex(match.group(2)))


def derive_iv(key: AesKey, name: str, plaintext_sha256: str) -> bytes:
    message = b"pyvorin-ivt\x00" + name.encode() + b"\x00" + bytes.fromhex(plaintext_sha256)
    return hmac.new(key.key, message, hashlib.sha256).digest()[:BLOCK]


def encrypted_size(plain_size: int) -> int:
    return (plain_size // BLOCK + 1) * BLOCK  # PKCS#7 always adds 1..16 bytes


def encrypt_chunks(chunks: Iterable[bytes], key: AesKey, iv: bytes) -> Iterator[bytes]:
    encryptor = Cipher(algorithms.AES(key.key), modes.CBC(iv)).encryptor()
    padder = padding.PKCS7(BLOCK * 8).padder()
    for chunk in chunks:
        out = encryptor.update(padder.update(chunk))
        if out:
            yield out
    yield encryptor.update(padder.finalize()) + encryptor.finalize()


def decrypt_chunks(chunks: Iterable[bytes], key: AesKey, iv: bytes) -> Iterator[bytes]:
    decryptor = Cipher(algorithms.AES(key.key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(BLOCK * 8).unpadder()
    for chunk in chunks:
        out = unpadder.update(decryptor.update(chunk))
        if out:
            yield out
    yield unpadder.update(decryptor.finalize()) + unpadder.finalize()
