"""Writing libconfig text (the syntax of SWUpdate's sw-description)."""

from __future__ import annotations

import re as _re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BundleError as _BundleError

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}


def quote(text: str) -> str:
    """A libconfig string literal; control characters become \\xNN escapes."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class Group:
    """``{ name = value; ... }``: settings in the given order."""

    settings: Sequence[tuple[str, object]]


@dataclass(frozen=True)
class List:
    """``( item, item )``: a list of groups (images, scripts, bootenv)."""

    items: Sequence[object]


@dataclass(frozen=True)
class Array:
    """``[ "a", "b" ]``: scalars of one type."""

    items: Sequence[str]


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    raise TypeError(f"not a libconfig scalar: {value!r}")


def _render(value: object, indent: int) -> str:
    pad = "\t" * indent
    if isinstance(value, Group):
        body = "".join(f"{pad}\t{name} = {_render(v, indent + 1)};\n" for name, v in value.settings)
        return "{\n" + body + pad + "}"
    if isinstance(value, List):
        if not value.items:
            return "( )"
        parts = [f"{pad}\t{_render(item, indent + 1)}" for item in value.items]
        return "(\n" + ",\n".join(parts) + "\n" + pad + ")"
    if isinstance(value, Array):
        return "[ " + ", ".join(quote(item) for item in value.items) + " ]"
    return _scalar(value)


def render(name: str, root: Group) -> str:
    """The whole file: one top-level setting."""
    return f"{name} =\n{_render(root, 0)};\n"


# --- Reading -----------------------------------------------------------------
# Enough of libconfig to read any sw-description back: groups become dicts,
# lists and arrays become Python lists, scalars become str/int/float/bool.

_TOKEN = _re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)L{0,2})
  | (?P<bool>\b(?:true|false|TRUE|FALSE|True|False)\b)
  | (?P<name>[A-Za-z*][-A-Za-z0-9_*]*)
  | (?P<punct>[=:;,{}()\[\]])
    """,
    _re.VERBOSE | _re.DOTALL,
)
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "f": "\f"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            line = text.count("\n", 0, pos) + 1
            raise _BundleError(f"sw-description: syntax error at line {line}")
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "x" and i + 3 < len(body):
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_UNESCAPE.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


#: Groups and lists nested deeper than this are refused: the parser recurses,
#: and no sw-description needs more than a dozen levels.
MAX_DEPTH = 64


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _BundleError(f"sw-description: groups and lists nested deeper than {MAX_DEPTH} levels")

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "eof" or (value is not None and tok[1] != value):
            raise _BundleError(f"sw-description: expected {value or 'a value'!r}, found {tok[1] or 'end of file'!r}")
        self.i += 1
        return tok

    def settings(self, end: str | None) -> dict[str, object]:
        result: dict[str, object] = {}
        while self.peek()[1] != (end or "") and self.peek()[0] != "eof":
            kind, name = self.take()
            if kind != "name":
                raise _BundleError(f"sw-description: expected a setting name, found {name!r}")
            sep = self.take()[1]
            if sep not in ("=", ":"):
                raise _BundleError(f"sw-description: expected '=' or ':' after {name!r}")
            result[name] = self.value()
            if self.peek()[1] in (";", ","):
                self.i += 1
        return result

    def value(self) -> object:
        kind, text = self.take()
        if kind == "string":
            parts = [_unquote(text)]
            while self.peek()[0] == "string":  # adjacent literals concatenate
                parts.append(_unquote(self.take()[1]))
            return "".join(parts)
        if kind == "number":
            clean = text.rstrip("L")
            return int(clean, 0) if _re.fullmatch(r"[-+]?(0[xX][0-9a-fA-F]+|\d+)", clean) else float(clean)
        if kind == "bool":
            return text.lower() == "true"
        if text == "{":
            self.nested()
            group = self.settings("}")
            self.take("}")
            self.depth -= 1
            return group
        if text in ("(", "["):
            self.nested()
            close = ")" if text == "(" else "]"
            items = []
            while self.peek()[1] != close:
                items.append(self.value())
                if self.peek()[1] == ",":
                    self.i += 1
            self.take(close)
            self.depth -= 1
            return items
        raise _BundleError(f"sw-description: unexpected {text!r}")


def parse(text: str) -> dict[str, object]:
    """Parse libconfig text into nested dicts and lists."""
    parser = _Parser(text)
    result = parser.settings(None)
    if parser.peek()[0] != "eof":
        raise _BundleError(f"sw-description: unexpected {parser.peek()[1]!r}")
    return result
