"""The update daemon started the device's way, fed the way a device is fed.

meta-swupdate starts swupdate through its own ``swupdate.sh``, which builds
``SWUPDATE_ARGS`` and then sources ``/usr/lib/swupdate/conf.d/*``; the layer's
``50-pyvorin`` adds ``-k``, ``-e``, ``-N`` and ``-R`` there. This test lays out
the device's read-only ``/usr`` (the pinned meta-swupdate ``swupdate.sh``
installed as its recipe installs it, the layer's files rendered as the
bbappend renders them, the device's swupdate build) over the host's /usr in a
private mount namespace, runs ``swupdate.sh``, reads the daemon's argv from
/proc, and sends bundles to it over its control socket with the device's
``swupdate-client``: newer installs, the same or an older release is refused,
a reinstall goes through only after ``swupdate-ipc setversion``. Files planted
in ``/etc`` (the overlay on /data) change nothing the daemon trusts.

Under systemd (the unit's Type=notify, the socket's mode, the drop-in that
hides /etc/swupdate) see test_swupdate_unit.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyvorin_devsim import device_swupdate
from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox

pytestmark = [pytest.mark.swupdate, pytest.mark.usefixtures("device_swupdate")]

RUNNING = "2026.11.3000000"


def _host_root_source() -> str:
    out = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def device_usr(layer: Path, ca_cert: Path, version: str, board: str, aes_key: Path | None = None,
               running: str = "a") -> Path:
    """The device's /usr: the device's swupdate build and the files its packages install, booted from
    slot ``running`` (the host's root stands for it)."""
    build = device_swupdate.build()
    (layer / "bin").mkdir(parents=True)
    for tool in ("swupdate", "swupdate-client", "swupdate-ipc", "fw_printenv"):
        shutil.copy2(build.tool(tool), layer / "bin" / tool)
    (layer / "bin/fw_setenv").symlink_to("fw_printenv")
    # The host's root stands for the running slot: the update writes the other.
    root = _host_root_source()
    slot_a, slot_b = (root, "/dev/pyvorin-no-slot-b") if running == "a" else ("/dev/pyvorin-no-slot-a", root)
    files = device_swupdate.usr_files(ca_cert, version, board, slot_a, slot_b, aes_key)
    for name, (content, mode) in files.items():
        (layer / name).parent.mkdir(parents=True, exist_ok=True)
        (layer / name).write_bytes(content)
        (layer / name).chmod(mode)
    return layer


@dataclass(frozen=True)
class DaemonRun:
    argv: list[str]
    output: str
    statuses: list[tuple[str, int]]


# Runs in the sandbox's namespace: start the daemon through swupdate.sh, wait
# for its control socket, read its argv, feed it bundles, stop it.
_SCRIPT = textwrap.dedent("""\
    # strace records the execve swupdate.sh makes: swupdate's own argv in /proc
    # is not reliable (its selector parsing writes NUL over the comma of -e).
    strace -f -qq -e trace=execve -e signal=none -s 1024 -o "$LOG.trace" /usr/lib/swupdate/swupdate.sh > "$LOG" 2>&1 &
    tracer=$!
    i=0
    while [ ! -S /run/swupdate/sockinstctrl ] && [ $i -lt 200 ] && kill -0 $tracer 2>/dev/null; do
        sleep 0.05; i=$((i + 1))
    done
    daemon=$(sed -n 's/^\\([0-9]*\\) *execve("\\/usr\\/bin\\/swupdate".*/\\1/p' "$LOG.trace")
    echo "EXECVE $(grep 'execve("/usr/bin/swupdate"' "$LOG.trace")"
    for step in "$@"; do
        case $step in
        "swupdate-ipc "*) eval "/usr/bin/$step"; echo "STEP $step status=$?" ;;
        *) /usr/bin/swupdate-client "$step" > /dev/null 2>&1; echo "STEP $step status=$?" ;;
        esac
    done
    if [ -n "$daemon" ]; then
        kill "$daemon"
        i=0
        while kill -0 "$daemon" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
        kill -9 "$daemon" 2>/dev/null
    fi
    wait $tracer
    echo "--- daemon log"; cat "$LOG"
""")


def run_daemon(sandbox: SwupdateSandbox, usr: Path, steps: list[str], etc_files: dict[str, str]) -> DaemonRun:
    ns_dir = sandbox.new_run_dir()
    script = ns_dir / "run.sh"
    script.write_text(_SCRIPT)
    log = ns_dir / "daemon.log"
    sandbox.usr_layer = usr
    try:
        result = sandbox.run(ns_dir, ["sh", "-c", f'LOG={log}; . {script}', "run", *steps], etc_files=etc_files,
                             needed=[Path(s) for s in steps if s.startswith("/")], timeout=60)
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else str(exc.output)
        daemon_log = log.read_text(errors="replace") if log.exists() else ""
        raise AssertionError(f"the daemon run did not finish:\n{output}\n--- daemon log\n{daemon_log}") from exc
    execve = re.search(r'^EXECVE .*execve\("/usr/bin/swupdate", \[(.*?)\]', result.output, re.M)
    argv = [json.loads(arg) for arg in re.findall(r'"(?:[^"\\]|\\.)*"', execve.group(1))] if execve else []
    statuses = [(m.group(1), int(m.group(2))) for m in re.finditer(r"^STEP (.+) status=(\d+)$", result.output, re.M)]
    return DaemonRun(argv, result.output, statuses)


def _bundle(cli, signer, make_spec, sandbox: SwupdateSandbox, version: str, seed: int,
            encrypted: bool = False) -> tuple[Path, bytes]:
    """A signed bundle of a *seed*-made image for the sandbox's slots (make_spec reuses its paths: build now)."""
    spec = make_spec(slot_a=str(sandbox.slot_a), slot_b=str(sandbox.slot_b), image_size=200 * 1024,
                     encrypted=encrypted, version=version, seed=seed)
    out = spec.parent / f"release-{version}-{seed}-{signer.directory.parent.name}.swu"
    aes = ["--aes-key", signer.aes] if encrypted else []
    cli("bundle", spec, "-o", out, *signer.signing_args(), *aes, check=True)
    return out, (spec.parent / "rootfs.img").read_bytes()


@pytest.fixture
def sandbox(tmp_path: Path) -> SwupdateSandbox:
    return SwupdateSandbox(tmp_path / "sbx", initial_env={"rootpart": "2", "bootcount": "0", "upgrade_available": "0"})


def test_swupdate_sh_passes_the_layer_options_and_versions_gate(cli, keys, foreign_keys, make_spec, sandbox,
                                                                tmp_path) -> None:
    usr = device_usr(tmp_path / "sbx" / "usr-layer", keys.ca, RUNNING, sandbox.board)
    newer, newer_image = _bundle(cli, keys, make_spec, sandbox, "2026.11.3000001", seed=2)
    foreign, _ = _bundle(cli, foreign_keys, make_spec, sandbox, "2026.11.3000001", seed=2)
    same, same_image = _bundle(cli, keys, make_spec, sandbox, RUNNING, seed=3)
    older, _ = _bundle(cli, keys, make_spec, sandbox, "2026.11.2999999", seed=4)
    # What a stale or hostile /etc overlay could hold: none of it may count.
    planted = {"swupdate.cfg": 'globals: { public-key-file = "/etc/swupdate/ca.crt"; };\n',
               "hwrevision": f"{sandbox.board} 9.9\n"}

    # One daemon start per bundle, as a device meets them: one update per boot.
    expected = {older: ("No downgrading allowed", 1), same: ("No reinstalling allowed", 1),
                foreign: ("Signature verification failed", 1), newer: ("SWUPDATE successful", 0)}
    for bundle, (message, status) in expected.items():
        run = run_daemon(sandbox, usr, [str(bundle)], planted)
        assert run.argv == ["/usr/bin/swupdate", "-v", "-k", "/usr/share/swupdate/ca.crt", "-e", "stable,copy1",
                            "-N", RUNNING, "-R", RUNNING], run.output
        assert run.statuses == [(str(bundle), status)], run.output
        assert message in run.output, run.output
        if status:
            assert sandbox.untouched(sandbox.slot_b) and sandbox.printenv()["rootpart"] == "2"
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(newer_image)] == newer_image
    assert sandbox.untouched(sandbox.slot_a)
    assert sandbox.printenv()["rootpart"] == "3"

    # A deliberate reinstall of the running release: root changes the daemon's
    # "current" version over its socket (SET_VERSIONS_RANGE; empty values stay
    # as they are). swupdate-ipc 2026.05.1 reads the three values from the
    # second to fourth word after "setversion", hence the placeholder "-".
    sandbox.setenv("rootpart", "2")
    reinstall = "swupdate-ipc setversion - '' '' reinstall"
    run = run_daemon(sandbox, usr, [reinstall, str(same)], {})
    assert run.statuses == [(reinstall, 0), (str(same), 0)], run.output
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(same_image)] == same_image


def test_start_fails_closed_without_a_release_version(keys, sandbox, tmp_path) -> None:
    usr = device_usr(tmp_path / "sbx" / "usr-layer", keys.ca, "", sandbox.board)
    run = run_daemon(sandbox, usr, [], {})
    assert "no IMAGE_VERSION" in run.output
    assert run.argv == [] or "/usr/bin/swupdate" not in run.argv


def test_start_fails_when_the_running_slot_is_unknown(keys, sandbox, tmp_path) -> None:
    usr = device_usr(tmp_path / "sbx" / "usr-layer", keys.ca, RUNNING, sandbox.board)
    select = usr / "libexec/pyvorin-swupdate-select"
    select.write_text(select.read_text().replace(_host_root_source(), "/dev/pyvorin-no-slot-a"))
    run = run_daemon(sandbox, usr, [], {})
    assert "is neither slot A" in run.output
    assert "/usr/bin/swupdate" not in run.argv


def test_an_image_with_an_aes_key_installs_encrypted_bundles(cli, keys, make_spec, sandbox, tmp_path) -> None:
    usr = device_usr(tmp_path / "sbx" / "usr-layer", keys.ca, RUNNING, sandbox.board, aes_key=keys.aes)
    swu, image = _bundle(cli, keys, make_spec, sandbox, "2026.11.3000001", seed=5, encrypted=True)
    run = run_daemon(sandbox, usr, [str(swu)], {})
    assert run.argv[-2:] == ["-K", "/usr/share/swupdate/aes.key"], run.output
    assert run.statuses == [(str(swu), 0)], run.output
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(image)] == image


def test_without_a_key_encrypted_bundles_are_refused(cli, keys, make_spec, sandbox, tmp_path) -> None:
    usr = device_usr(tmp_path / "sbx" / "usr-layer", keys.ca, RUNNING, sandbox.board)
    swu, _ = _bundle(cli, keys, make_spec, sandbox, "2026.11.3000001", seed=5, encrypted=True)
    run = run_daemon(sandbox, usr, [str(swu)], {})
    assert "-K" not in run.argv and run.statuses == [(str(swu), 1)], run.output
    assert sandbox.untouched(sandbox.slot_b)
