"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def write_image(path: Path, size: int, seed: int = 1) -> Path:
    """Deterministic, partly compressible test data."""
    import random

    rng = random.Random(seed)
    block = rng.randbytes(4096)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            piece = block if rng.random() < 0.5 else bytes(4096)
            piece = piece[: size - written]
            handle.write(piece)
            written += len(piece)
    return path


def extract(swu: Path, into: Path) -> Path:
    """Unpack a bundle with GNU cpio, the reference reader."""
    into.mkdir(parents=True, exist_ok=True)
    with open(swu, "rb") as handle:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=handle, cwd=into, check=True)
    return into


def unavailable(reason: str) -> None:
    """Skip for *reason*; under ``CI=true`` fail instead: CI installs everything the tests use.
    Also at module level, where a whole module needs what is missing."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must not skip: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> types.ModuleType:
    """The Python module *name*, which the test extra installs; as :func:`require` for programs."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"needs the Python module {name} (pip install -e '.[test]'; scripts/test.sh installs it)")
        raise


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (servers the tests start bind it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], explain: Callable[[], str], timeout: float,
               interval: float = 1.0) -> None:
    """Polls ``check`` until it holds; else fails saying ``what`` was not done, and ``explain()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"not done within {timeout:.0f}s: {what}\n{explain()}")


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The one ``pyvorin:`` line a failed command must print, exiting ``code`` (2: ``pyvorin: error:``)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    prefix = "pyvorin: error: " if code == 2 else "pyvorin: "
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0]


_PEAK_RSS = (
    "import sys\n"
    "from pyvorin.cli import pyvorin\n"
    "rc = pyvorin(sys.argv[1:])\n"
    "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
    "sys.exit(rc)\n"
)


def pyvorin_peak_rss(env: dict[str, str], *args: object) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``pyvorin ARGS`` in a child process; its result and its peak RSS in KiB.

    VmHWM of the child itself, not ru_maxrss: Linux carries ru_maxrss across
    execve, so a child forked from a large pytest process would report the
    parent's size."""
    result = subprocess.run([sys.executable, "-c", _PEAK_RSS, *map(str, args)], capture_output=True, text=True,
                            env=env)
    lines = result.stdout.strip().splitlines()
    return result, int(lines[-1]) if lines and lines[-1].isdigit() else 0


def which(tool: str) -> str | None:
    """*tool* on PATH, or in the virtual environment running the tests (scripts/test.sh's .venv)."""
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which(tool) or shutil.which(tool, path=venv_bin)


def require(*tools: str) -> None:
    missing = [t for t in tools if which(t) is None]
    if missing:
        unavailable(f"needs {', '.join(missing)} (scripts/test.sh installs them)")


def read_members(swu: Path) -> list[tuple[str, bytes]]:
    """All members of a (small, test) bundle, in order."""
    import io

    from pyvorin import cpio

    data = swu.read_bytes()
    handle = io.BytesIO(data)
    return [(m.name, cpio.read_member(handle, m, limit=1 << 30)) for m in cpio.iter_members(handle, len(data))]


def write_members(path: Path, members: list[tuple[str, bytes]], *, keep_checksum_of: dict[str, int] | None = None) -> Path:
    """Write members as a well-formed cpio: an attacker recomputes the checksums."""
    import io

    from pyvorin import cpio
    from pyvorin.hashing import byte_sum

    out = io.BytesIO()
    writer = cpio.CpioWriter(out)
    for name, data in members:
        checksum = (keep_checksum_of or {}).get(name, byte_sum(data))
        writer.add_bytes(name, data, checksum)
    writer.finish()
    path.write_bytes(out.getvalue())
    return path


def delta_header(blob: bytes) -> Any:
    """The JSON header of a windowed delta (pyvorin.delta.container's layout)."""
    import json
    import struct

    (size,) = struct.unpack(">I", blob[8:12])
    return json.loads(blob[12:12 + size])


def delta_rehashed(blob: bytes) -> bytes:
    """A windowed delta with its self-hash recomputed, as an attacker who can write one would."""
    import hashlib

    from pyvorin.delta.container import TRAILER

    body = blob[:-40] if blob[-40:-32] == TRAILER else blob
    return body + TRAILER + hashlib.sha256(body).digest()


def delta_with_header(blob: bytes, header: Any) -> bytes:
    """A windowed delta with *header* in place of its own, the self-hash made valid again."""
    import json
    import struct

    (size,) = struct.unpack(">I", blob[8:12])
    encoded = json.dumps(header).encode()
    return delta_rehashed(blob[:8] + struct.pack(">I", len(encoded)) + encoded + blob[12 + size:-40])


def tampered(swu: Path, out: Path, member: str | None = None, *, flip_at: int = -1, drop: str | None = None,
             fix_checksum: bool = True) -> Path:
    """A copy of ``swu`` with one byte of ``member`` flipped, or ``drop`` removed."""
    members = read_members(swu)
    result = []
    original = {}
    for name, data in members:
        if name == drop:
            continue
        if name == member:
            buf = bytearray(data)
            buf[flip_at] ^= 0x01
            original[name] = sum(data) & 0xFFFFFFFF
            data = bytes(buf)
        result.append((name, data))
    return write_members(out, result, keep_checksum_of=None if fix_checksum else original)


class RecipeFatal(Exception):
    """bb.fatal() called by a recipe function run with recipe_functions()."""


class RecipeData:
    """The part of BitBake's datastore a recipe's helper functions read."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def getVar(self, name: str) -> str | None:  # noqa: N802 - BitBake's API
        return self.values.get(name)


def recipe_functions(recipe: Path) -> dict[str, Callable[..., Any]]:
    """A recipe's top-level ``def`` blocks, run with a stub ``bb`` whose fatal() raises RecipeFatal."""
    text = recipe.read_text()
    blocks = re.findall(r"^def .*?(?=^\S)", text, re.M | re.S)
    assert blocks, f"no python functions in {recipe.name}"

    def fatal(message: str) -> None:
        raise RecipeFatal(message)

    namespace: dict[str, object] = {"bb": types.SimpleNamespace(fatal=fatal), "os": os}
    exec(compile("".join(blocks), str(recipe), "exec"), namespace)  # noqa: S102 - our own recipe
    return {k: v for k, v in namespace.items() if k.startswith("pyvorin_") and callable(v)}


def recipe_modules(recipe: Path) -> list[str]:
    """The release-tool modules (``pyvorin/...py``) a recipe's SRC_URI takes from scripts/."""
    return re.findall(r"file://scripts/(pyvorin/\S+\.py)", recipe.read_text())
