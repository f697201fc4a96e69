"""A hostile CMS signature gets one VerificationError, never a traceback.

A real signature is decoded into its DER tree; hypothesis then rebuilds it with
one node replaced (by nothing, an empty structure, a primitive of the wrong
kind, a copy of another node) or with bytes flipped, and ``cms.verify`` must
answer with :class:`VerificationError` (what ``pyvorin verify`` prints as one
line), whatever the shape."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvorin import cms, der
from pyvorin.errors import VerificationError
from pyvorin.signing import SigningOptions, load_certificates, sign_content

CONTENT = b'software = { version = "1.0"; };\n'


@dataclass(frozen=True)
class Node:
    tag: int
    content: bytes
    children: tuple[Node, ...] | None  # None: primitive, or not decoded further

    def encode(self) -> bytes:
        if self.children is None:
            return der.tlv(self.tag, self.content)
        return der.tlv(self.tag, b"".join(child.encode() for child in self.children))


def tree(element: der.Element) -> Node:
    # Certificates stay opaque blobs: cryptography parses them, not us.
    if element.constructed and element.tag in (der.SEQUENCE, der.SET, 0xA0, 0xA1):
        try:
            return Node(element.tag, b"", tuple(tree(child) for child in element.children()))
        except VerificationError:
            pass
    return Node(element.tag, element.content, None)


def paths(node: Node, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    found = [prefix]
    for index, child in enumerate(node.children or ()):
        found += paths(child, (*prefix, index))
    return found


def replace(node: Node, path: tuple[int, ...], new: Node | None) -> Node | None:
    if not path:
        return new
    assert node.children is not None
    head, rest = path[0], path[1:]
    children = list(node.children)
    replaced = replace(children[head], rest, new)
    if replaced is None:
        del children[head]
    else:
        children[head] = replaced
    return Node(node.tag, b"", tuple(children))


REPLACEMENTS = [
    None,
    Node(der.SEQUENCE, b"", ()),
    Node(der.SET, b"", ()),
    Node(0xA0, b"", ()),
    Node(der.INTEGER, b"\x01", None),
    Node(der.OID, b"", None),
    Node(der.OID, b"\x2a\x86\x48", None),
    Node(der.OCTET_STRING, b"", None),
    Node(0x05, b"", None),
]


@pytest.fixture(scope="module")
def signed(keys) -> tuple[Node, list[tuple[int, ...]], list]:  # type: ignore[no-untyped-def]
    signature = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert))
    root = tree(der.decode_one(signature))
    assert root.encode() == signature, "the tree re-encodes to the same bytes"
    return root, paths(root), load_certificates(keys.ca)


def _judge(signature: bytes, anchors: list) -> None:  # type: ignore[type-arg]
    try:
        cms.verify(signature, CONTENT, anchors)
    except VerificationError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_node_replaced_is_one_verification_error(signed, data) -> None:  # type: ignore[no-untyped-def]
    root, all_paths, anchors = signed
    path = data.draw(st.sampled_from(all_paths[1:]))
    choice = data.draw(st.sampled_from(range(len(REPLACEMENTS) + 1)))
    if choice == len(REPLACEMENTS):  # a copy of another node, of another kind
        other = data.draw(st.sampled_from(all_paths))
        new: Node | None = root
        for index in other:
            assert new is not None and new.children is not None
            new = new.children[index]
    else:
        new = REPLACEMENTS[choice]
    mutated = replace(root, path, new)
    assert mutated is not None
    _judge(mutated.encode(), anchors)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_or_cut_bytes_are_one_verification_error(signed, data) -> None:  # type: ignore[no-untyped-def]
    root, _, anchors = signed
    signature = bytearray(root.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(signature) - 1))
        signature[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(signature)))
    _judge(bytes(signature[:cut]), anchors)


@pytest.mark.parametrize(("path", "message"), [
    ((1, 0, 4, 0, 1), "IssuerAndSerialNumber"),      # sid emptied
    ((1, 0, 4, 0, 2), "DigestAlgorithmIdentifier"),  # digest algorithm emptied
    ((1, 0, 4, 0, 4), "signatureAlgorithm"),         # signature algorithm emptied
])
def test_emptied_signer_fields_are_named(signed, path: tuple[int, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    root, _, anchors = signed
    mutated = replace(root, path, Node(der.SEQUENCE, b"", ()))
    assert mutated is not None
    with pytest.raises(VerificationError, match=message):
        cms.verify(mutated.encode(), CONTENT, anchors)
