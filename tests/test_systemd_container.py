"""Smoke test of tests/systemd_container.py: real systemd 252 as PID 1 starts a
socket-activated ``Type=notify`` service written here, the way ``swupdate.socket``
and ``swupdate.service`` will be started, and the container leaves nothing behind.

The durations (cold rootfs build, boot, shutdown) are printed even with output
capture on and recorded as test properties (``--junitxml``), so a slow boot is
visible in every run."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from systemd_container import Rootfs, RootfsSpec, SystemdContainer, build_rootfs, require

#: python3 for the demo service: a shell script cannot send READY=1 from the
#: main process, and ``systemd-notify`` from a child races its own exit in 252.
SPEC = RootfsSpec("smoke", packages=("python3-minimal",))

DEMO = '''#!/usr/bin/python3
"""Socket-activated Type=notify demo: greets every client on the inherited socket."""
import os
import socket
import sys

assert os.environ.get("LISTEN_PID") == str(os.getpid()), "not socket-activated"
listener = socket.socket(fileno=3)
greeting = sys.argv[sys.argv.index("--greeting") + 1]
address = os.environ["NOTIFY_SOCKET"]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
    notify.connect("\\0" + address[1:] if address.startswith("@") else address)
    notify.sendall(b"READY=1\\nSTATUS=greeting clients")
print(f"ready with LISTEN_FDS={os.environ['LISTEN_FDS']} greeting={greeting}", flush=True)
while True:
    connection, _ = listener.accept()
    with connection:
        connection.sendall(f"{greeting}\\n".encode())
'''

SOCKET_UNIT = """[Unit]
Description=pyvorin smoke test socket

[Socket]
ListenStream=/run/pyv-demo/demo.sock
SocketMode=0660
DirectoryMode=0750

[Install]
WantedBy=sockets.target
"""

SERVICE_UNIT = """[Unit]
Description=pyvorin smoke test socket-activated notify service
Requires=pyv-demo.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/local/bin/pyv-demo --greeting placeholder
"""

#: Replaces the command line, as the layer's swupdate drop-ins do.
DROPIN = """[Service]
ExecStart=
ExecStart=/usr/local/bin/pyv-demo --greeting hello
"""


@pytest.fixture(scope="module")
def rootfs() -> Rootfs:
    require()
    return build_rootfs(SPEC)


#: What nspawn and mount(8) would create on the host if they were not confined to a private /run.
HOST_RUN_PATHS = ("/run/systemd/nspawn", "/run/mount")


def _host_mounts_under(*paths: Path) -> list[str]:
    """Lines of the host's mount table that mention one of ``paths`` (the overlay must never appear)."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if any(str(path) in line for path in paths)]


def test_socket_activated_notify_service_under_systemd(rootfs: Rootfs, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        record_property: Callable[[str, object], None]) -> None:
    host_run = {path: os.path.lexists(path) for path in HOST_RUN_PATHS}
    container = SystemdContainer(rootfs.path, tmp_path / "container")
    with container:
        container.write("/usr/local/bin/pyv-demo", DEMO, mode=0o755)
        container.add_unit("pyv-demo.socket", SOCKET_UNIT)
        container.add_unit("pyv-demo.service", SERVICE_UNIT)
        container.add_dropin("pyv-demo.service", "10-greeting", DROPIN)
        container.enable("pyv-demo.socket", wanted_by="sockets.target")

        boot = container.boot()
        assert boot.state == "running", f"failed units {boot.failed_units}:\n{boot.failed_text}"
        assert container.masked == {}
        assert _host_mounts_under(tmp_path, rootfs.path) == [], "the overlay is visible in the host's namespace"
        assert container.run("systemctl", "--version").stdout.startswith("systemd 252 ")
        assert container.run("cat", "/proc/1/comm").stdout.strip() == "systemd"

        # Socket activation: listening, the service not started until a client connects.
        assert container.systemctl("is-active", "pyv-demo.socket").stdout.strip() == "active"
        assert container.systemctl("is-active", "pyv-demo.service").stdout.strip() == "inactive"
        sock = container.path("/run/pyv-demo/demo.sock")
        info = os.stat(sock)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
        assert stat.S_IMODE(os.stat(container.path("/run/pyv-demo")).st_mode) == 0o750
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(sock))
            assert client.makefile("rb").readline() == b"hello\n"

        props = container.wait_active("pyv-demo.service", sub_state="running")
        assert "Active: active (running)" in container.status("pyv-demo.service")
        assert container.show("pyv-demo.service", "StatusText")["StatusText"] == "greeting clients"
        pid = container.main_pid("pyv-demo.service")
        assert str(pid) == props["MainPID"]
        assert container.cmdline(pid) == ["/usr/bin/python3", "/usr/local/bin/pyv-demo", "--greeting", "hello"]
        assert "ready with LISTEN_FDS=1 greeting=hello" in container.journal("pyv-demo.service")
        verify = container.verify("/etc/systemd/system/pyv-demo.socket", "/etc/systemd/system/pyv-demo.service")
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    down = container.shutdown_report
    assert down is not None and not down.forced and down.exit_code == 0, (down, container.console())
    assert container.leftovers() == []
    assert _host_mounts_under(tmp_path, rootfs.path) == []
    assert {path: os.path.lexists(path) for path in HOST_RUN_PATHS} == host_run
    # The boot wrote into the upper layer, never into the cached tree.
    assert (tmp_path / "container/upper/etc/systemd/system/pyv-demo.service").is_file()
    assert not (rootfs.path / "etc/systemd/system/pyv-demo.service").exists()
    assert not (rootfs.path / "etc/machine-id").read_text().strip()

    timings = {"rootfs_build_s": rootfs.build_seconds, "boot_s": boot.seconds, "shutdown_s": down.seconds}
    for name, value in timings.items():
        record_property(name, value)
    with capsys.disabled():
        built = "cached" if rootfs.build_seconds is None else f"{rootfs.build_seconds:.1f}s"
        print(f"\n[systemd-container] rootfs build: {built}, boot to {boot.state}: {boot.seconds:.2f}s "
              f"({boot.startup.splitlines()[0] if boot.startup else 'no systemd-analyze time'}), "
              f"shutdown: {down.seconds:.2f}s, systemd {rootfs.packages.get('systemd', '?')}, "
              f"at {time.strftime('%H:%M:%S')}")
