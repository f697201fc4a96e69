"""swupdate.service and swupdate.socket under real systemd, as the device has them.

systemd 252 runs as PID 1 in a container (``systemd_container``); the device's
swupdate build, meta-swupdate's own ``swupdate.sh``, unit, socket and tmpfiles
(from the pinned layer, installed as its recipe installs them) and the
layer's drop-ins and ``50-pyvorin`` go where the packages put them on the
device: under /usr. A file planted in /etc/swupdate (the overlay on /data)
tries to replace ``50-pyvorin``; the daemon must not see it.

Checked: the socket unit listens with mode 0600 in a 0700 directory; the
service, Type=notify, reaches active (running) (so CONFIG_SYSTEMD works), took
its sockets from systemd, and runs with the layer's options; the units pass
``systemd-analyze verify``. Installs through the daemon are in
test_swupdate_daemon.py; the booted device is the QEMU system test's.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvorin_devsim import device_swupdate
from test_swupdate_daemon import RUNNING

import systemd_container

pytestmark = [pytest.mark.swupdate, pytest.mark.usefixtures("device_swupdate")]

SPEC = systemd_container.RootfsSpec("swupdate-unit", packages=("libconfig9", "libjson-c5", "liblua5.4-0",
                                                                "libarchive13", "libzstd1", "libssl3"))
META = "recipes-support/swupdate/swupdate"


def _meta(name: str) -> str:
    return (device_swupdate.meta_swupdate() / META / name).read_text()


def _socket_unit() -> str:
    """swupdate.socket as swupdate.inc writes it: the paths of the merged CONFIG_SOCKET_*_PATH."""
    config = device_swupdate.config_values(device_swupdate.merged_config())
    return (_meta("swupdate.socket.tmpl")
            .replace("@@SWUPDATE_SOCKET_CTRL_PATH@@", config["CONFIG_SOCKET_CTRL_PATH"].strip('"'))
            .replace("@@SWUPDATE_SOCKET_PROGRESS_PATH@@", config["CONFIG_SOCKET_PROGRESS_PATH"].strip('"')))


@pytest.fixture(scope="module")
def rootfs() -> systemd_container.Rootfs:
    systemd_container.require()
    return systemd_container.build_rootfs(SPEC)


@pytest.fixture
def device(rootfs: systemd_container.Rootfs, keys, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[systemd_container.SystemdContainer]:
    build = device_swupdate.build()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(build.libdir))  # so ldd finds libubootenv for copy_binary
    with systemd_container.SystemdContainer(rootfs.path, tmp_path / "device") as c:
        for lib in sorted(build.libdir.iterdir()):
            if lib.is_file() and not lib.is_symlink():
                c.copy_in(lib, f"/usr/lib/x86_64-linux-gnu/{lib.name}")
        c.symlink("/usr/lib/x86_64-linux-gnu/libubootenv.so.0", "libubootenv.so.0.3.5")
        c.copy_binary(build.swupdate, "/usr/bin/swupdate")
        systemd = "/usr/lib/systemd/system"
        c.write(f"{systemd}/swupdate.service", _meta("swupdate.service").replace("@LIBDIR@", "/usr/lib"))
        c.write(f"{systemd}/swupdate.socket", _socket_unit())
        c.write("/usr/lib/tmpfiles.d/swupdate.conf", _meta("tmpfiles-swupdate.conf"))
        files = device_swupdate.SWUPDATE_FILES
        c.write(f"{systemd}/swupdate.service.d/pyvorin-trust.conf", (files / "pyvorin-trust.conf").read_text())
        c.write(f"{systemd}/swupdate.service.d/pyvorin-hardening.conf",
                (files / "swupdate-hardening.conf").read_text())
        c.write(f"{systemd}/swupdate.socket.d/pyvorin.conf", (files / "pyvorin-socket.conf").read_text())
        # What a stale or hostile /etc overlay could hold.
        c.write("/etc/swupdate/conf.d/50-pyvorin", 'SWUPDATE_ARGS="-v -k /etc/swupdate/ca.crt -e stable,copy1"\n')
        c.write("/etc/swupdate/conf.d/99-planted", 'SWUPDATE_ARGS="$SWUPDATE_ARGS -k /etc/swupdate/ca.crt"\n')
        c.write("/etc/swupdate.cfg", 'globals: { public-key-file = "/etc/swupdate/ca.crt"; };\n')
        c.enable("swupdate.socket", "sockets.target")
        c.boot()
        # The daemon's files, once the container's root (slot A here) is known;
        # swupdate.service starts only when a test starts it.
        root = c.run("findmnt", "-n", "-o", "SOURCE", "/").stdout.strip()
        for name, (content, mode) in device_swupdate.usr_files(keys.ca, RUNNING, "raspberrypi4-64", root,
                                                               "/dev/null").items():
            c.write(f"/usr/{name}", content, mode=mode)
        yield c


def test_socket_is_root_only(device: systemd_container.SystemdContainer) -> None:
    device.wait_active("swupdate.socket")
    for name in ("sockinstctrl", "swupdateprog"):
        mode = os.stat(device.path(f"/run/swupdate/{name}")).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, oct(mode)
    assert stat.S_IMODE(os.stat(device.path("/run/swupdate")).st_mode) == 0o700


def test_notify_service_runs_with_the_layer_options(device: systemd_container.SystemdContainer) -> None:
    started = device.systemctl("start", "swupdate.service", timeout=60)
    assert started.returncode == 0, device.status("swupdate.service", lines=60) + device.journal("swupdate.service")
    props = device.wait_active("swupdate.service", sub_state="running")
    assert props.get("Type", "notify") == "notify"
    pid = device.main_pid("swupdate.service")
    argv = device.cmdline(pid)
    # swupdate's selector parsing writes NUL over the comma of -e in its own argv.
    assert argv == ["/usr/bin/swupdate", "-v", "-k", "/usr/share/swupdate/ca.crt", "-e", "stable", "copy1",
                    "-N", RUNNING, "-R", RUNNING], (argv, device.journal("swupdate.service"))
    journal = device.journal("swupdate.service")
    assert "got no socket" not in journal, journal  # both sockets came from swupdate.socket
    assert "/etc/swupdate" not in " ".join(argv)
    verify = device.verify("/usr/lib/systemd/system/swupdate.service", "/usr/lib/systemd/system/swupdate.socket")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_planted_etc_files_win_without_the_trust_dropin(device: systemd_container.SystemdContainer) -> None:
    """The reason for pyvorin-trust.conf: without it swupdate.sh obeys /etc/swupdate/conf.d."""
    dropin = "/usr/lib/systemd/system/swupdate.service.d/pyvorin-trust.conf"
    device.run("rm", dropin)
    device.systemctl("daemon-reload", check=True)
    device.systemctl("start", "swupdate.service", timeout=60)
    journal = device.journal("swupdate.service")
    assert "/etc/swupdate/ca.crt" in journal, journal  # the planted 50-pyvorin took over


def test_device_build_has_no_executable_stack() -> None:
    """MemoryDenyWriteExecute=yes in the unit needs it; so does hardening."""
    out = subprocess.run(["readelf", "-lW", str(device_swupdate.build().swupdate)], capture_output=True, text=True,
                         check=True).stdout
    stack = [line.split() for line in out.splitlines() if "GNU_STACK" in line]
    assert stack and stack[0][-2] == "RW", out
