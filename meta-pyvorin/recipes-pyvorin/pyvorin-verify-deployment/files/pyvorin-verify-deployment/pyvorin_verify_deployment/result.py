"""A check's verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str


def _one_line(text: str) -> str:
    # Command output can span lines; the report promises one line per check.
    return " ".join(text.split())


def passed(name: str, detail: str) -> Result:
    return Result(name, True, _one_line(detail))


def failed(name: str, detail: str) -> Result:
    return Result(name, False, _one_line(detail))
