"""The layer's systemd units and drop-ins, judged by systemd-analyze.

Each unit is installed into a throw-away root with stub targets and stub
binaries, then ``systemd-analyze verify --root`` must print nothing (it exits 0
on unknown keys and only warns, so any stderr fails) and ``systemd-analyze
security --offline=true --threshold=N`` must stay under our budget. Upstream
units we only add drop-ins to (swupdate.service, sshd.socket) are written here
as equivalents of the meta-swupdate and oe-core files, not copied.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, require

LAYER = ROOT / "meta-pyvorin"
HARDENING = LAYER / "recipes-core" / "pyvorin-hardening" / "files"
SWUPDATE_DROPIN = LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/files/swupdate-hardening.conf"
UNITDIR = "usr/lib/systemd/system"

# meta-swupdate's swupdate.service (recipes-support/swupdate/swupdate/), as
# installed with @LIBDIR@ = /usr/lib.
SWUPDATE_SERVICE = """\
[Unit]
Description=SWUpdate daemon
Documentation=https://github.com/sbabic/swupdate

[Service]
Type=notify
ExecStart=/usr/lib/swupdate/swupdate.sh
KillMode=mixed

[Install]
WantedBy=multi-user.target
"""
SWUPDATE_SOCKET = """\
[Unit]
Description=SWUpdate socket listener

[Socket]
ListenStream=/tmp/sockinstctrl
ListenStream=/tmp/swupdateprog

[Install]
WantedBy=sockets.target
"""
# oe-core's sshd.socket / sshd@.service (openssh, socket mode), as installed.
SSHD_SOCKET = """\
[Unit]
Conflicts=sshd.service
Wants=sshdgenkeys.service

[Socket]
ExecStartPre=/usr/bin/mkdir -p /var/run/sshd
ListenStream=22
Accept=yes

[Install]
WantedBy=sockets.target
"""
SSHD_AT_SERVICE = """\
[Unit]
Description=OpenSSH Per-Connection Daemon
After=sshdgenkeys.service

[Service]
Environment="SSHD_OPTS="
EnvironmentFile=-/etc/default/ssh
ExecStart=-/usr/sbin/sshd -i $SSHD_OPTS
StandardInput=socket
KillMode=process
"""
SSHDGENKEYS_SERVICE = """\
[Unit]
Description=OpenSSH Key Generation
RequiresMountsFor=/var /run

[Service]
ExecStart=/usr/libexec/sshd_check_keys
Type=oneshot
RemainAfterExit=yes
"""
STUB_TARGETS = ("sysinit", "basic", "shutdown", "network-pre", "network", "multi-user", "sockets",
                "local-fs", "paths", "timers")
STUB_BINARIES = ("usr/lib/swupdate/swupdate.sh", "usr/sbin/nft", "usr/sbin/sshd", "usr/bin/mkdir",
                 "usr/libexec/sshd_check_keys", "usr/bin/systemd-tmpfiles")

# Exposure budgets (0-100 scale of --threshold; 40 = 4.0).
SWUPDATE_THRESHOLD = 40
FIREWALL_THRESHOLD = 15
JOURNAL_STORAGE_THRESHOLD = 20
# systemd's own unit, as systemd 255 (scarthgap) installs it; only what
# ordering and verify need.
JOURNAL_FLUSH_SERVICE = """\
[Unit]
Description=Flush Journal to Persistent Storage
DefaultDependencies=no
After=systemd-journald.service systemd-remount-fs.service
Before=shutdown.target
Conflicts=shutdown.target
RequiresMountsFor=/var/log/journal

[Service]
ExecStart=/usr/bin/mkdir -p /run/flushed
Type=oneshot
RemainAfterExit=yes
"""


@dataclass(frozen=True)
class Root:
    path: Path

    def unit(self, name: str, text: str) -> Path:
        path = self.path / UNITDIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def dropin(self, unit: str, name: str, text: str) -> Path:
        return self.unit(f"{unit}.d/{name}", text)


@pytest.fixture
def root(tmp_path: Path) -> Root:
    require("systemd-analyze")
    base = Root(tmp_path / "root")
    for target in STUB_TARGETS:
        base.unit(f"{target}.target", f"[Unit]\nDescription=stub {target}\n")
    for binary in STUB_BINARIES:
        path = base.path / binary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return base


def verify(root: Root, *units: str) -> None:
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root.path}", *units],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), \
        f"systemd-analyze verify {' '.join(units)}:\n{result.stdout}{result.stderr}"


def exposure(root: Root, unit: str, threshold: int) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", f"--root={root.path}",
                             f"--threshold={threshold}", "--no-pager", unit],
                            capture_output=True, text=True, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    print(f"{unit}: exposure {score} (budget {threshold / 10})")
    assert result.returncode == 0, f"{unit}: exposure {score} over {threshold / 10}:\n{result.stdout}"
    return score


def firewall_unit() -> str:
    return (HARDENING / "pyvorin-firewall.service").read_text() \
        .replace("@SBINDIR@", "/usr/sbin").replace("@DATADIR@", "/usr/share")


def test_swupdate_dropin_verifies_and_scores_under_budget(root: Root) -> None:
    root.unit("swupdate.service", SWUPDATE_SERVICE)
    root.unit("swupdate.socket", SWUPDATE_SOCKET)
    verify(root, "swupdate.service", "swupdate.socket")
    before = exposure(root, "swupdate.service", 100)
    root.dropin("swupdate.service", "pyvorin-hardening.conf", SWUPDATE_DROPIN.read_text())
    verify(root, "swupdate.service", "swupdate.socket")
    after = exposure(root, "swupdate.service", SWUPDATE_THRESHOLD)
    print(f"swupdate.service: {before} upstream -> {after} with the drop-in")
    assert after < before


def test_firewall_unit_verifies_and_scores_under_budget(root: Root) -> None:
    root.unit("pyvorin-firewall.service", firewall_unit())
    verify(root, "pyvorin-firewall.service")
    exposure(root, "pyvorin-firewall.service", FIREWALL_THRESHOLD)


def test_journal_storage_unit_verifies_scores_and_runs_before_the_flush(root: Root) -> None:
    unit = (HARDENING / "pyvorin-journal-storage.service").read_text() \
        .replace("@BINDIR@", "/usr/bin").replace("@TMPFILESDIR@", "/usr/lib/tmpfiles.d")
    root.unit("systemd-journal-flush.service", JOURNAL_FLUSH_SERVICE)
    root.unit("pyvorin-journal-storage.service", unit)
    verify(root, "pyvorin-journal-storage.service", "systemd-journal-flush.service")
    exposure(root, "pyvorin-journal-storage.service", JOURNAL_STORAGE_THRESHOLD)
    shown = subprocess.run(["systemd-analyze", "cat-config", f"--root={root.path}",
                            f"/{UNITDIR}/pyvorin-journal-storage.service"],
                           capture_output=True, text=True, check=True).stdout
    assert "Before=systemd-journal-flush.service" in shown
    assert "WantedBy=systemd-journal-flush.service" in shown
    # PrivateTmp= would order it after systemd-tmpfiles-setup, i.e. after the flush.
    assert not re.search(r"^PrivateTmp=", shown, re.M)


def test_sshd_socket_dropin_moves_the_port(root: Root) -> None:
    root.unit("sshd.socket", SSHD_SOCKET)
    root.unit("sshd@.service", SSHD_AT_SERVICE)
    root.unit("sshdgenkeys.service", SSHDGENKEYS_SERVICE)
    dropin = (HARDENING / "sshd-socket.conf.in").read_text().replace("@SSH_PORT@", "2222")
    root.dropin("sshd.socket", "50-pyvorin-port.conf", dropin)
    verify(root, "sshd.socket")
    shown = subprocess.run(["systemd-analyze", "cat-config", f"--root={root.path}", f"/{UNITDIR}/sshd.socket"],
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    # The empty ListenStream= resets the list: only our port is left.
    listens = [ln for ln in shown.stdout.splitlines() if ln.startswith("ListenStream")]
    assert listens == ["ListenStream=22", "ListenStream=", "ListenStream=2222"], shown.stdout


def test_verify_catches_a_misspelt_hardening_option(root: Root) -> None:
    """verify exits 0 here; only its stderr shows the problem."""
    broken = firewall_unit().replace("ProtectKernelTunables=yes", "ProtectKernelTunable=yes")
    root.unit("pyvorin-firewall.service", broken)
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root.path}", "pyvorin-firewall.service"],
                            capture_output=True, text=True, check=False)
    assert "ProtectKernelTunable" in result.stderr
    with pytest.raises(AssertionError):
        verify(root, "pyvorin-firewall.service")


def test_security_threshold_fails_an_unhardened_unit(root: Root) -> None:
    root.unit("swupdate.service", SWUPDATE_SERVICE)
    with pytest.raises(AssertionError, match="over 4.0"):
        exposure(root, "swupdate.service", SWUPDATE_THRESHOLD)
