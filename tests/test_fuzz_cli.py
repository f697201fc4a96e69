"""Every subcommand against mutated genuine inputs: one error line, no traceback, nothing partial.

Genuine inputs (a release spec with its image, a signed and an unsigned bundle,
a windowed delta, a key directory) are mutated by hypothesis, structurally
(a spec value replaced by a hostile one, a bundle member changed with its
cpio checksum recomputed so the reader gets past it, a delta header rewritten
with its self-hash recomputed) and as raw bytes. Each run goes through
``pyvorin.cli.main``, the function the installed command calls, in process
(a subprocess per example would cost the budget). The properties, per run:

- the exit code is 0, 1 (verification failed) or 2 (bad input), never an
  uncaught exception, and a failure prints exactly one ``pyvorin`` line on
  stderr;
- no file in the workspace is new or changed, except the requested output;
- that output is absent after a failure (or as it was), and complete after a
  success (a bundle verifies).

The budget is fixed (seeded under CI, ``derandomize``): ~2 minutes in all.
``PYVORIN_FUZZ_EXAMPLES`` scales it for a longer campaign."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import create_spdx
from helpers import delta_header, delta_rehashed, delta_with_header, read_members, write_image, write_members

SCALE = float(os.environ.get("PYVORIN_FUZZ_EXAMPLES", "1"))


def budget(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def _in_process(entry: Callable[[], int | None], cwd: Path) -> Outcome:
    """Run a command's entry function in *cwd*, its output captured and its exit code collected."""
    saved_cwd = os.getcwd()
    # Real text streams over bytes: commands write to sys.stdout.buffer too.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | str | None = entry()
            except SystemExit as exc:  # main()'s own exit, and usage errors
                code = exc.code
    finally:
        os.chdir(saved_cwd)
    assert isinstance(code, int), f"exit code {code!r}"
    return Outcome(code, _text(out), _text(err))


def run_cli(argv: list[str], cwd: Path) -> Outcome:
    """``pyvorin ARGV`` through cli.main(), as the console script runs it."""
    from pyvorin import cli

    def entry() -> None:
        saved = sys.argv
        sys.argv = ["pyvorin", *argv]
        try:
            cli.main()
        finally:
            sys.argv = saved

    return _in_process(entry, cwd)


def run_device_applier(argv: list[str], cwd: Path) -> Outcome:
    """``pyvorin-delta-apply ARGV`` (python3 -I -m pyvorin.delta, as swupdate's Lua handler runs it)."""
    from pyvorin.delta.__main__ import main

    return _in_process(lambda: main(argv), cwd)


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode(errors="backslashreplace")


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            files[str(path.relative_to(root))] = (info.st_size, info.st_mode, hashlib.sha256(path.read_bytes()).digest())
    return files


def check(outcome: Outcome, before: dict[str, tuple[int, int, bytes]], root: Path, output: str | None,
          allowed_changes: frozenset[str] = frozenset()) -> None:
    assert outcome.code in (0, 1, 2), outcome
    assert "Traceback" not in outcome.stderr
    if outcome.code != 0:
        lines = outcome.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyvorin"), outcome.stderr
        assert outcome.code == 2 or lines[0].startswith("pyvorin: verification failed"), outcome
    after = snapshot(root)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    changed -= allowed_changes
    if output is not None:
        if outcome.code != 0:
            assert before.get(output) == after.get(output), f"{output} left behind by a failed run"
        changed.discard(output)
    assert not changed, f"files changed besides the output: {sorted(changed)}"


# -- genuine inputs ---------------------------------------------------------------------

SPEC = {
    "version": "2026.11.0",
    "description": "fuzz release",
    "artifacts": {"rootfs.img": {"file": "rootfs.img", "type": "raw"}},
    "scripts": [{"file": "post.sh", "type": "postinstall"}],
    "sbom": "image.spdx.json",
    "machines": {
        "raspberrypi4-64": {
            "hardware-compatibility": ["1.0"],
            "bootenv": {"upgrade_available": "1"},
            "copy1": {"install": {"rootfs.img": "/dev/mmcblk0p3"}, "bootenv": {"rootpart": "3"}},
            "copy2": {"install": {"rootfs.img": "/dev/mmcblk0p2"}, "bootenv": {"rootpart": "2"}},
        },
    },
}


@dataclass(frozen=True)
class Workspace:
    root: Path
    keys: Path

    @property
    def signing(self) -> list[str]:
        return ["--key", str(self.keys / "swupdate/signer.key"), "--cert", str(self.keys / "swupdate/signer.crt")]

    @property
    def ca(self) -> str:
        return str(self.keys / "swupdate/ca.crt")


@pytest.fixture(scope="module")
def genuine(keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("genuine")
    write_image(base / "rootfs.img", 48 * 1024)
    (base / "post.sh").write_text("#!/bin/sh\nexit 0\n")
    # The bundles carry an SBOM: mutations reach its reader through verify, inspect and sign.
    (base / "image.spdx.json").write_bytes(
        create_spdx.documents("pyvorin-image-raspberrypi4-64.rootfs", "2026.11.0", {})
        ["pyvorin-image-raspberrypi4-64.rootfs.spdx.json"])
    (base / "release.yaml").write_text(yaml.safe_dump(SPEC))
    work = Workspace(base, keys.directory)
    signed = run_cli(["bundle", "release.yaml", "-o", "signed.swu", *work.signing], base)
    unsigned = run_cli(["bundle", "release.yaml", "-o", "unsigned.swu", "--unsigned"], base)
    assert signed.code == 0 and unsigned.code == 0, (signed, unsigned)
    old, new = base / "old.img", base / "new.img"
    write_image(old, 256 * 1024, seed=3)
    data = bytearray(old.read_bytes())
    data[5000:9000] = os.urandom(4000)
    data[100_000:100_100] = bytes(100)
    new.write_bytes(bytes(data))
    made = run_cli(["delta", "old.img", "new.img", "-o", "update.pyvd", "--no-report"], base)
    assert made.code == 0, made
    yield Genuine({
        "work": work,
        "spec": SPEC,
        "signed": (base / "signed.swu").read_bytes(),
        "unsigned": (base / "unsigned.swu").read_bytes(),
        "delta": (base / "update.pyvd").read_bytes(),
        "old": old.read_bytes(),
    })


class Genuine(dict[str, Any]):
    """The genuine inputs; a short repr, since hypothesis prints it with every failing example."""

    def __repr__(self) -> str:
        return f"Genuine({', '.join(self)})"


@pytest.fixture
def workspace(genuine: dict[str, Any], tmp_path: Path) -> Workspace:
    """A fresh copy of the genuine inputs per test (hypothesis reuses it across examples)."""
    src: Workspace = genuine["work"]
    root = tmp_path / "ws"
    shutil.copytree(src.root, root)
    return Workspace(root, src.keys)


@contextlib.contextmanager
def fresh(workspace: Workspace) -> Iterator[Path]:
    """A per-example directory with the genuine files, removed afterwards."""
    example = workspace.root.parent / "example"
    shutil.rmtree(example, ignore_errors=True)
    shutil.copytree(workspace.root, example)
    try:
        yield example
    finally:
        shutil.rmtree(example, ignore_errors=True)


# -- strategies ---------------------------------------------------------------------------

HOSTILE_SCALARS = st.sampled_from([
    None, True, False, 0, -1, 2**64, 1e308, float("nan"), "", " ", "\x00", "\u202e", "a" * 5000,
    "../../../etc/passwd", "/etc/shadow", "-rf", "x;reboot", "${HOME}", "@@MACHINE@@", "$swupdate_get_sha256(x)",
    '"', "\\", "1.2.3.4.5", "999999999999", "copy1", "TRAILER!!!", "sw-description",
])


def hostile_values() -> st.SearchStrategy[Any]:
    return st.recursive(HOSTILE_SCALARS | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3),
                        max_leaves=6)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


# A mutation is drawn whole, as plain values, before the test body runs: the
# body only applies it. Indices are drawn from a fixed range and taken modulo
# the input's length, so no draw depends on what an earlier one produced.
INDEX = st.integers(0, 1 << 20)
BYTE_EDITS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert"]), INDEX, st.integers(1, 255),
                                st.integers(1, 64), st.binary(min_size=1, max_size=16)), min_size=1, max_size=4)
TREE_EDITS = st.tuples(INDEX, st.sampled_from(["replace", "delete", "add"]),
                       st.text(max_size=12) | st.sampled_from(["encrypted", "sha256", "device", "type"]),
                       hostile_values())


def mutate_tree(edit: tuple[int, str, str, Any], tree: Any) -> Any:
    at, action, new_key, value = edit
    tree = copy.deepcopy(tree)
    candidates = paths_of(tree)[1:]
    path = candidates[at % len(candidates)]
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[new_key] = value
    else:
        parent[path[-1]] = value
    return tree


def mutate_bytes(edits: list[tuple[str, int, int, int, bytes]], blob: bytes) -> bytes:
    buf = bytearray(blob)
    for kind, at, flip, cut, insert in edits:
        at %= max(1, len(buf))
        if kind == "flip" and buf:
            buf[at] ^= flip
        elif kind == "cut":
            del buf[at: at + cut]
        else:
            buf[at:at] = insert
    return bytes(buf)


LIBCONFIG_SNIPPETS = ["{", "}", "(", ")", "[", "]", ";", ",", "=", ":", '"', "\\", "0x", "1e999", "L", "@include",
                      '"\\u0000"', "true", "{" * 100, "(" * 100, "sha256 = 1;", 'filename = "../x";',
                      'device = "/dev/sda";', 'type = "shellscript";', "/*", "//", "\x00", "\xff"]
LIBCONFIG_EDITS = st.lists(st.tuples(INDEX, st.integers(0, 8), st.sampled_from(LIBCONFIG_SNIPPETS)),
                           min_size=1, max_size=3)


def mutate_libconfig(edits: list[tuple[int, int, str]], text: bytes) -> bytes:
    buf = text.decode(errors="replace")
    for at, cut, snippet in edits:
        at %= len(buf) + 1
        buf = buf[:at] + snippet + buf[at + cut:]
    return buf.encode(errors="surrogateescape")


HOSTILE_NAMES = ["../evil", "a/b", "-rf", "sw-description", ".", "x" * 200, "sw-description.sig", "\u00e9",
                 "rootfs.img"]
MEMBER_EDITS = st.tuples(INDEX, st.sampled_from(["content", "name", "drop", "duplicate", "swap"]),
                         st.sampled_from(HOSTILE_NAMES), BYTE_EDITS, LIBCONFIG_EDITS)


def mutate_members(edit: tuple[int, str, str, Any, Any], blob: bytes, tmp: Path) -> bytes:
    """Change one member (content, name or order) and write a well-formed cpio again."""
    at, kind, new_name, byte_edits, text_edits = edit
    members = read_members_bytes(blob, tmp)
    index = at % len(members)
    name, content = members[index]
    if kind == "content":
        if name == "sw-description":
            content = mutate_libconfig(text_edits, content)
        else:
            content = mutate_bytes(byte_edits, content)
        members[index] = (name, content)
    elif kind == "name":
        members[index] = (new_name, content)
    elif kind == "drop":
        del members[index]
    elif kind == "duplicate":
        members.insert(index, members[index])
    elif len(members) > 1:
        members[0], members[-1] = members[-1], members[0]
    out = tmp / "members.swu"
    write_members(out, members)
    return out.read_bytes()


def read_members_bytes(blob: bytes, tmp: Path) -> list[tuple[str, bytes]]:
    path = tmp / "in.swu"
    path.write_bytes(blob)
    return read_members(path)


# -- the commands -------------------------------------------------------------------------


@budget(120)
@given(structural=st.booleans(), tree_edit=TREE_EDITS, byte_edits=BYTE_EDITS,
       command=st.sampled_from(["swdesc", "bundle", "bundle-unsigned"]))
def test_spec_commands(workspace: Workspace, genuine: dict[str, Any], structural: bool, tree_edit: Any,
                       byte_edits: Any, command: str) -> None:
    with fresh(workspace) as root:
        if structural:
            text = yaml.safe_dump(mutate_tree(tree_edit, genuine["spec"]), allow_unicode=True).encode()
        else:
            text = mutate_bytes(byte_edits, yaml.safe_dump(genuine["spec"]).encode())
        (root / "release.yaml").write_bytes(text)
        before = snapshot(root)
        if command == "swdesc":
            outcome = run_cli(["swdesc", "release.yaml"], root)
            check(outcome, before, root, None)
            return
        extra = ["--unsigned"] if command == "bundle-unsigned" else workspace.signing
        outcome = run_cli(["bundle", "release.yaml", "-o", "out.swu", *extra], root)
        check(outcome, before, root, "out.swu")
        if outcome.code == 0 and command == "bundle":
            verified = run_cli(["verify", "out.swu", "--cert", workspace.ca], root)
            assert verified.code == 0, (outcome, verified)


@budget(160)
@given(source=st.sampled_from(["signed", "unsigned"]), structural=st.booleans(), member_edit=MEMBER_EDITS,
       byte_edits=BYTE_EDITS,
       command=st.sampled_from(["verify", "verify-unsigned", "inspect", "inspect-json", "sign", "sbom"]))
def test_bundle_readers(workspace: Workspace, genuine: dict[str, Any], source: str, structural: bool,
                        member_edit: Any, byte_edits: Any, command: str) -> None:
    with fresh(workspace) as root:
        if structural:
            blob = mutate_members(member_edit, genuine[source], root.parent)
        else:
            blob = mutate_bytes(byte_edits, genuine[source])
        (root / "bad.swu").write_bytes(blob)
        before = snapshot(root)
        argv, output = {
            "verify": (["verify", "bad.swu", "--cert", workspace.ca], None),
            "verify-unsigned": (["verify", "bad.swu", "--allow-unsigned"], None),
            "inspect": (["inspect", "bad.swu"], None),
            "inspect-json": (["inspect", "bad.swu", "--json"], None),
            "sbom": (["sbom", "show", "bad.swu", "--json"], None),
            "sign": (["sign", "bad.swu", "-o", "out.swu", *workspace.signing], "out.swu"),
        }[command]
        outcome = run_cli(argv, root)
        check(outcome, before, root, output)
        if command == "inspect-json" and outcome.code == 0:
            json.loads(outcome.stdout)
        if command == "sign" and outcome.code == 0:
            verified = run_cli(["verify", "out.swu", "--cert", workspace.ca], root)
            assert verified.code == 0, ("sign signed what verify refuses", verified)


@budget(120)
@given(kind=st.sampled_from(["bytes", "bytes-rehashed", "header"]), tree_edit=TREE_EDITS, byte_edits=BYTE_EDITS,
       workdir=st.sampled_from([None, "missing-dir", "rootfs.img", "."]), device=st.booleans())
def test_delta_apply(workspace: Workspace, genuine: dict[str, Any], kind: str, tree_edit: Any, byte_edits: Any,
                     workdir: str | None, device: bool) -> None:
    """``pyvorin delta-apply`` on the host and the device's applier alike."""
    with fresh(workspace) as root:
        blob = genuine["delta"]
        if kind == "header":
            blob = delta_with_header(blob, mutate_tree(tree_edit, delta_header(blob)))
        else:
            blob = mutate_bytes(byte_edits, blob)
            if kind == "bytes-rehashed":
                blob = delta_rehashed(blob)
        (root / "bad.pyvd").write_bytes(blob)
        (root / "target.img").write_bytes(bytes(len(genuine["old"])))
        argv = ["bad.pyvd", "--source", "old.img", "--target", "target.img"]
        if workdir is not None:
            argv += ["--workdir", workdir]
        before = snapshot(root)
        outcome = run_device_applier(argv, root) if device else run_cli(["delta-apply", *argv], root)
        # The target is the inactive slot: a failed apply may leave it half
        # written (the update fails, nothing boots it), never resized or removed.
        check(outcome, before, root, None, allowed_changes=frozenset({"target.img"}))
        assert (root / "target.img").stat().st_size == len(genuine["old"])


@budget(60)
@given(structural=st.booleans(), tree_edit=TREE_EDITS, byte_edits=BYTE_EDITS)
def test_keys_show(workspace: Workspace, structural: bool, tree_edit: Any, byte_edits: Any) -> None:
    with fresh(workspace) as root:
        keys = root / "keys"
        shutil.copytree(workspace.keys, keys)
        manifest = json.loads((keys / "manifest.json").read_text())
        if structural:
            (keys / "manifest.json").write_text(json.dumps(mutate_tree(tree_edit, manifest)))
        else:
            (keys / "manifest.json").write_bytes(mutate_bytes(byte_edits, (keys / "manifest.json").read_bytes()))
        before = snapshot(root)
        check(run_cli(["keys", "show", "keys"], root), before, root, None)


@budget(40)
@given(days=st.sampled_from([-1, 0, 1, 36500, 36501, 10**9, 10**30]),
       only=st.sampled_from(["", ",", "swupdate,,", "nope", "swupdate,swupdate", "../x"]),
       organization=st.sampled_from(["", "\x00", "a" * 200, "O=x,CN=y"]))
def test_keys_init_arguments(workspace: Workspace, days: int, only: str, organization: str) -> None:
    with fresh(workspace) as root:
        argv = ["keys", "init", "newkeys", "--key-size", "2048", "--days", str(days), "--only", only,
                "--organization", organization]
        before = snapshot(root)
        outcome = run_cli(argv, root)
        check(outcome, before, root, None, allowed_changes=frozenset(
            str(p.relative_to(root)) for p in (root / "newkeys").rglob("*")) if outcome.code == 0 else frozenset())
        if outcome.code != 0:
            assert not (root / "newkeys").exists(), "a failed keys init left a directory"


@pytest.mark.slow
def test_a_longer_campaign(tmp_path: Path) -> None:
    """The same properties with 20 times the examples (about half an hour)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                             str(Path(__file__))], env={**os.environ, "PYVORIN_FUZZ_EXAMPLES": "20"},
                            capture_output=True, text=True, timeout=3600, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
