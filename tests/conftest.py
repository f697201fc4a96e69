"""Shared fixtures: a test PKI generated at test time (never committed), release
specs written into tmp dirs, and a runner for the real ``pyvorin`` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from helpers import ROOT, recipe_modules, unavailable, write_image

if TYPE_CHECKING:
    from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox

# CI must be repeatable: the same examples every run there; random ones locally.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass(frozen=True)
class Cli:
    """Runs ``python -m pyvorin`` as users do, in a scrubbed environment."""

    env: dict[str, str]

    def __call__(self, *args: str | Path, cwd: Path | None = None, check: bool = False,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "pyvorin", *map(str, args)],
            cwd=cwd, env=merged, capture_output=True, text=True, timeout=600,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pyvorin {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYVORIN_", "SOURCE_DATE_EPOCH"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT / "scripts"), LC_ALL="C.UTF-8")
    return Cli(env)


@dataclass(frozen=True)
class KeySet:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "swupdate" / "ca.crt"

    @property
    def key(self) -> Path:
        return self.directory / "swupdate" / "signer.key"

    @property
    def cert(self) -> Path:
        return self.directory / "swupdate" / "signer.crt"

    @property
    def aes(self) -> Path:
        return self.directory / "swupdate" / "aes.key"

    def signing_args(self) -> list[str]:
        return ["--key", str(self.key), "--cert", str(self.cert)]


@pytest.fixture(scope="session")
def keys(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    """A full dev key set (2048-bit SWUpdate keys keep the suite quick)."""
    directory = tmp_path_factory.mktemp("pki") / "keys"
    cli("keys", "init", directory, "--key-size", "2048", check=True)
    return KeySet(directory)


@pytest.fixture(scope="session")
def foreign_keys(cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    """Another organisation's keys: valid, but not trusted by ``keys``."""
    directory = tmp_path_factory.mktemp("foreign") / "keys"
    cli("keys", "init", directory, "--only", "swupdate", "--key-size", "2048", "--organization", "Mallory", check=True)
    return KeySet(directory)


SpecWriter = Callable[..., Path]


@pytest.fixture
def make_spec(tmp_path: Path) -> SpecWriter:
    """Write a release spec with one raw image targeting two slot paths."""

    def make(
        slot_a: str = "/dev/mmcblk0p2",
        slot_b: str = "/dev/mmcblk0p3",
        image_size: int = 64 * 1024,
        encrypted: bool = False,
        extra: str = "",
        machine: str = "raspberrypi4-64",
        version: str = "2026.11.0",
        seed: int = 1,
    ) -> Path:
        write_image(tmp_path / "rootfs.img", image_size, seed=seed)
        text = textwrap.dedent(f"""\
            version: "{version}"
            description: test release
            artifacts:
              rootfs.img:
                file: rootfs.img
                type: raw
                encrypted: {str(encrypted).lower()}
            machines:
              {machine}:
                hardware-compatibility: ["1.0"]
                bootenv:
                  upgrade_available: "1"
                  bootcount: 0
                copy1:
                  install:
                    rootfs.img: {slot_b}
                  bootenv:
                    rootpart: "3"
                copy2:
                  install:
                    rootfs.img: {slot_a}
                  bootenv:
                    rootpart: "2"
            """) + extra
        spec = tmp_path / "release.yaml"
        spec.write_text(text)
        return spec

    return make


@pytest.fixture
def no_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    yield


@pytest.fixture(scope="session")
def device_swupdate() -> None:
    """The device's swupdate build and the sandbox it runs in; skips (fails under CI) when impossible here."""
    from pyvorin_devsim.swupdate_sandbox import swupdate_available

    if reason := swupdate_available():
        unavailable(f"the device's swupdate cannot run here: {reason}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the BitBake gate at once when it is selected: its minutes of
    parsing and dry runs overlap the rest of the suite (tests/layer_gate.py)."""
    if not any(item.get_closest_marker("gate") for item in session.items):
        return
    import layer_gate

    if not layer_gate.missing_prerequisites():
        layer_gate.start_in_background()


#: Tests that start daemons against wall-clock limits wait until the background
#: gate no longer competes for the two cores, so a slow host never looks like a
#: failure. Guests and containers wait where they boot (qemu/vm.py,
#: systemd_container.py), so building their images still overlaps the gate.
_TIMING_SENSITIVE = {"test_swupdate_daemon"}


def pytest_runtest_setup(item: pytest.Item) -> None:
    module = getattr(item, "module", None)
    if module is not None and module.__name__.rsplit(".", 1)[-1] in _TIMING_SENSITIVE:
        import layer_gate

        layer_gate.wait_for_background()


# The recipe's file name carries the tool's version (test_layer holds them equal).
APPLY_RECIPE = next((ROOT / "meta-pyvorin/recipes-pyvorin/pyvorin-delta-apply").glob("pyvorin-delta-apply_*.bb"))


@pytest.fixture
def delta_env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Install the applier into a sandbox, as the image would.

    swupdate runs with a private /tmp, so a checkout under /tmp is invisible
    to it: the files are copied into the sandbox directory, which is bound in.
    """

    def enable(sandbox: SwupdateSandbox) -> None:
        # Exactly the modules and the wrapper the image's recipe installs, where
        # it installs them (an overlay on /usr for the run), run by the system
        # python3 in isolated mode as on the device: a module the recipe
        # forgets fails here. The handler itself is compiled into the device's
        # swupdate and calls /usr/bin/pyvorin-delta-apply.
        usr = sandbox.root / "usr-layer"
        site = usr / "lib/python3/dist-packages"
        for module in recipe_modules(APPLY_RECIPE):
            (site / module).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "scripts" / module, site / module)
        (usr / "bin").mkdir(parents=True)
        shutil.copy(APPLY_RECIPE.parent / "files/pyvorin-delta-apply", usr / "bin/pyvorin-delta-apply")
        (usr / "bin/pyvorin-delta-apply").chmod(0o755)
        sandbox.usr_layer = usr
        monkeypatch.setenv("PATH", f"/usr/bin:/bin:{os.environ.get('PATH', '')}")

    return enable
