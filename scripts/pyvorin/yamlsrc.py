"""YAML loading that remembers where each mapping key came from.

Spec errors must name the key *and its line*, so mappings are loaded as
:class:`Located` dicts that carry the line of every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError
from .fsutil import read_bytes


class Located(dict[str, Any]):
    """A mapping from the YAML file, with ``line`` and per-key ``lines`` (1-based)."""

    line: int = 0
    lines: dict[str, int]

    def where(self, key: str | None = None) -> int:
        if key is not None and key in self.lines:
            return self.lines[key]
        return self.line


#: Deeper nesting is no spec: refused before the recursive composer goes deeper.
MAX_DEPTH = 32


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark | None) -> None:
        super().__init__()
        self.mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts collections as it composes them, in the same single pass."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        nested = self.check_event(yaml.CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    result = Located()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise SpecError(f"line {key_node.start_mark.line + 1}: mapping key {key!r} must be a string")
        if key in result:
            raise SpecError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_yaml(path: Path, what: str = "YAML file") -> Located:
    """Load a YAML file whose top level must be a mapping."""
    raw = read_bytes(path, what)
    try:
        data = yaml.load(raw, Loader=_Loader)
    except _TooDeep as exc:
        where = f"line {exc.mark.line + 1}: " if exc.mark else ""
        raise SpecError(f"{path}: {where}nested deeper than {MAX_DEPTH} levels") from exc
    except yaml.reader.ReaderError as exc:
        # A NUL, a control character or a byte that is not UTF-8.
        raise SpecError(f"{path}: byte {exc.position}: not YAML text ({_one_line(exc.reason)})") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(f"{path}: {where}malformed YAML: {_one_line(exc.problem or '')}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {_one_line(str(exc))}") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text") from exc
    if not isinstance(data, Located):
        raise SpecError(f"{path}: the top level must be a mapping of keys")
    return data
