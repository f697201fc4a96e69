"""pyvorin-verify-deployment: every check against a passing and a failing
fixture.  Files come from a fixture device root (--root); systemctl is a
fixture script; nft, sshd and the agent are the real programs, the firewall
and sshd in their own network/mount namespaces so the host is never touched."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_support import AgentStarter, Sources, needs_mount_namespace, run_verify, write_config
from pyvorin_edge_agent import backup
from pyvorin_edge_agent.store import EdgeStore
from pyvorin_edge_agent.syncqueue import SyncQueue
from pyvorin_verify_deployment.checks import CHECKS
from pyvorin_verify_deployment.checks.firewall import analyse

MAIN_PID = 4242

GOOD_RULES = textwrap.dedent("""\
    flush ruleset
    table inet pyvorin {
      chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iif "lo" accept
        ip saddr 10.20.0.0/16 tcp dport 22 ct state new jump ssh
        meta l4proto icmp icmp type echo-request limit rate 5/second accept
        tcp dport 8883 accept
      }
      chain ssh { accept; }
      chain forward { type filter hook forward priority filter; policy drop; }
    }
    """)
# The hardening ruleset's style: named sets for the management subnets and MQTT ports.
SET_RULES = textwrap.dedent("""\
    flush ruleset
    table inet pyvorin {
      set mgmt4 { type ipv4_addr; flags interval; elements = { 10.20.0.0/16 }; }
      set mqtt_ports { type inet_service; elements = { 8883 }; }
      chain input {
        type filter hook input priority filter; policy drop;
        iif != "lo" tcp dport 8080 counter drop
        iif "lo" accept
        ct state established,related accept
        tcp dport 22 ip saddr @mgmt4 ct state new accept
        tcp dport @mqtt_ports ct state new accept
      }
    }
    """)
GOOD_RULESETS = {"good": GOOD_RULES, "good, named sets": SET_RULES}
BAD_RULES = {
    "agent port in a named set": SET_RULES.replace("elements = { 8883 }", "elements = { 8080, 8883 }"),
    "ssh port in an open named set": SET_RULES.replace("elements = { 8883 }", "elements = { 22, 8883 }"),
    "policy accept": GOOD_RULES.replace("policy drop;", "policy accept;", 1),
    "ssh from anywhere": GOOD_RULES.replace("ip saddr 10.20.0.0/16 tcp dport 22", "tcp dport { 22, 443 }"),
    "agent port open": GOOD_RULES.replace("tcp dport 8883 accept", "tcp dport 8000-8100 accept"),
    "no ssh rule": GOOD_RULES.replace("ip saddr 10.20.0.0/16 tcp dport 22 ct state new jump ssh\n", ""),
}
GOOD_SSHD = "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM yes\n"
BAD_SSHD = {
    "passwords": GOOD_SSHD.replace("PasswordAuthentication no", "PasswordAuthentication yes"),
    # PAM through keyboard-interactive asks for the password all the same.
    "keyboard-interactive": GOOD_SSHD.replace("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes"),
}


@dataclass(frozen=True)
class Device:
    """A fixture device root plus a fake systemctl on PATH."""

    root: Path
    bin: Path

    @property
    def data(self) -> Path:
        return self.root / "data/pyvorin-edge"

    def write(self, device_path: str, text: str) -> Path:
        path = self.root / device_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def systemd(self, state: str, pid: int = MAIN_PID) -> None:
        script = self.bin / "systemctl"
        script.write_text(textwrap.dedent(f"""\
            #!/bin/sh
            case "$1" in
              is-active) echo {state}; [ {state} = active ] ;;
              show) echo {pid} ;;
              *) exit 1 ;;
            esac
            """))
        script.chmod(0o755)

    def env(self) -> dict[str, str]:
        # sshd and nft live in sbin, which a non-root PATH may lack.
        return {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"}


def make_device(tmp_path: Path, port: int = 8080) -> Device:
    device = Device(tmp_path / "device", tmp_path / "bin")
    device.bin.mkdir()
    device.systemd("active")
    device.write("/etc/pyvorin-edge/config.toml",
                 f'[agent]\ndata_dir = "/data/pyvorin-edge"\n[http]\nport = {port}\n').chmod(0o640)
    device.write("/etc/passwd", f"root:x:0:0::/root:/bin/sh\npyvorin-edge:x:{os.getuid()}:{os.getgid()}::"
                                "/data/pyvorin-edge:/sbin/nologin\n")
    device.data.mkdir(parents=True)
    store, queue = EdgeStore(device.data), SyncQueue(device.data)
    store.add_readings({"cpu_percent": 1.0})
    queue.enqueue("telemetry", {"n": 1})
    store.close()
    queue.close()
    backup.create(device.data, device.data / "backups", keep=14, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=20))
    device.write("/etc/systemd/journald.conf", "[Journal]\nStorage=persistent\n")
    device.write("/usr/lib/systemd/journald.conf.d/10-pyvorin.conf",
                 "[Journal]\nSystemMaxUse=256M\nSystemMaxFileSize=32M\nMaxFileSec=1week\n")
    device.write("/proc/self/mounts", "/dev/mmcblk0p2 / ext4 ro,relatime 0 0\nproc /proc proc rw 0 0\n"
                                      "/dev/mmcblk0p4 /data ext4 rw,nosuid,nodev,relatime 0 0\n")
    device.write("/sys/module/apparmor/parameters/enabled", "Y\n")
    device.write("/sys/kernel/security/apparmor/profiles", "swupdate (enforce)\npyv-edge-agent (enforce)\n")
    device.write(f"/proc/{MAIN_PID}/attr/apparmor/current", "pyv-edge-agent (enforce)\n")
    device.write("/sys/class/thermal/thermal_zone0/temp", "48000\n")
    device.write("/sys/class/thermal/thermal_zone1/temp", "51500\n")
    return device


def verify(device: Device, *checks: str, extra: tuple[str, ...] = (),
           wrap: list[str] | None = None) -> dict[str, Any]:
    args = ["--root", device.root, "--json", *extra]
    for check in checks:
        args += ["--only", check]
    result = run_verify(*args, env=device.env(), wrap=wrap)
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout)
    assert result.returncode == (0 if document["ok"] else 1)
    return dict(document)


def outcome(device: Device, check: str, **kwargs: Any) -> tuple[bool, str]:
    (only,) = verify(device, check, **kwargs)["checks"]
    assert only["name"] == check
    return bool(only["ok"]), str(only["detail"])


def _corrupt_newest_backup(d: Device) -> None:
    newest = backup.list_sets(d.data / "backups")[-1].path / "edge_store.db"
    newest.write_bytes(newest.read_bytes()[:-1] + b"\x07")


def _old_backups(d: Device) -> None:
    for entry in backup.list_sets(d.data / "backups"):
        shutil.rmtree(entry.path)
    backup.create(d.data, d.data / "backups", keep=14, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))


def _not_wal(d: Device) -> None:
    path = d.data / "sync_queue.db"
    data = bytearray(path.read_bytes())
    data[18:20] = b"\x01\x01"
    path.write_bytes(bytes(data))


# check -> (why it fails, how to break the passing device)
FILE_FAILURES: list[tuple[str, str, Callable[[Device], object]]] = [
    ("service-active", "unit failed", lambda d: d.systemd("failed")),
    ("config-readable", "malformed TOML", lambda d: d.write("/etc/pyvorin-edge/config.toml", "[agent\n")),
    ("config-readable", "missing", lambda d: (d.root / "etc/pyvorin-edge/config.toml").unlink()),
    ("config-readable", "world-writable", lambda d: (d.root / "etc/pyvorin-edge/config.toml").chmod(0o666)),
    ("databases-writable", "owned by another user",
     lambda d: d.write("/etc/passwd", f"pyvorin-edge:x:{os.getuid() + 1}:1::/:/sbin/nologin\n")),
    ("databases-writable", "not WAL", _not_wal),
    ("databases-writable", "database missing", lambda d: (d.data / "edge_store.db").unlink()),
    ("databases-writable", "data on a read-only mount",
     lambda d: d.write("/proc/self/mounts", "/dev/root / ext4 ro 0 0\n/dev/mmcblk0p4 /data ext4 ro 0 0\n")),
    ("backups-present", "newest set damaged", _corrupt_newest_backup),
    ("backups-present", "newest set too old", _old_backups),
    ("backups-present", "no backups", lambda d: shutil.rmtree(d.data / "backups")),
    ("journald-caps", "cap raised by a later drop-in",
     lambda d: d.write("/etc/systemd/journald.conf.d/zz-local.conf", "[Journal]\nSystemMaxUse=1G\n")),
    ("journald-caps", "no caps", lambda d: shutil.rmtree(d.root / "usr/lib/systemd/journald.conf.d")),
    ("root-read-only", "root rw", lambda d: d.write("/proc/self/mounts", "/dev/root / ext4 rw 0 0\n")),
    ("root-read-only", "rw overlay stacked on ro root",
     lambda d: d.write("/proc/self/mounts", "/dev/root / ext4 ro 0 0\noverlay / overlay rw 0 0\n")),
    ("apparmor-agent", "profile in complain mode",
     lambda d: d.write("/sys/kernel/security/apparmor/profiles", "pyv-edge-agent (complain)\n")),
    ("apparmor-agent", "agent started unconfined",
     lambda d: d.write(f"/proc/{MAIN_PID}/attr/apparmor/current", "unconfined\n")),
    ("apparmor-agent", "AppArmor disabled", lambda d: d.write("/sys/module/apparmor/parameters/enabled", "N\n")),
    ("thermal", "zone above 75 °C", lambda d: d.write("/sys/class/thermal/thermal_zone1/temp", "75100\n")),
    ("thermal", "no zone", lambda d: shutil.rmtree(d.root / "sys/class/thermal")),
]
FILE_CHECKS = sorted({check for check, _, _ in FILE_FAILURES})


@pytest.mark.parametrize("check", FILE_CHECKS)
def test_check_passes_on_a_good_device(tmp_path: Path, check: str) -> None:
    ok, detail = outcome(make_device(tmp_path), check)
    assert ok, detail


@pytest.mark.parametrize(("check", "why", "breaker"), FILE_FAILURES, ids=[f"{c}: {w}" for c, w, _ in FILE_FAILURES])
def test_check_fails_on_a_broken_device(tmp_path: Path, check: str, why: str,
                                        breaker: Callable[[Device], object]) -> None:
    device = make_device(tmp_path)
    breaker(device)
    ok, detail = outcome(device, check)
    assert not ok, f"{check} passed although {why}: {detail}"


@pytest.mark.parametrize(("millicelsius", "healthy"), [(45000, True), (80000, False)])
def test_health_check_against_the_real_agent(tmp_path: Path, sources: Sources, start_agent: AgentStarter,
                                             millicelsius: int, healthy: bool) -> None:
    sources.write(millicelsius=millicelsius)
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    device = make_device(tmp_path, port=agent.port)
    ok, detail = outcome(device, "health")
    assert ok is healthy, detail
    assert healthy or "thermal_celsius" in detail


def test_health_check_fails_when_nothing_listens(tmp_path: Path) -> None:
    ok, detail = outcome(make_device(tmp_path), "health", extra=("--health-url", "http://127.0.0.1:9/health",
                                                               "--timeout", "2"))
    assert not ok and "no answer" in detail


def netns_wrap(rules: Path) -> list[str]:
    """Run in a private network namespace with ``rules`` loaded by the real nft."""
    return ["unshare", "-n", "sh", "-c", f'nft -f {rules} && exec "$@"', "sh"]


@needs_mount_namespace
@pytest.mark.parametrize("case", [*GOOD_RULESETS, *BAD_RULES])
def test_firewall_check_with_real_nft(tmp_path: Path, case: str) -> None:
    if shutil.which("nft") is None:
        pytest.skip("needs nft (apt-get install nftables)")
    rules = tmp_path / "rules.nft"
    rules.write_text({**GOOD_RULESETS, **BAD_RULES}[case])
    ok, detail = outcome(make_device(tmp_path), "firewall", wrap=netns_wrap(rules))
    assert ok is (case in GOOD_RULESETS), f"{case}: {detail}"


def test_firewall_analysis_of_an_empty_ruleset() -> None:
    problems = analyse({"nftables": [{"metainfo": {}}]}, ssh_port=22, agent_port=8080)
    assert any("policy drop" in p for p in problems) and any("SSH" in p for p in problems)


def sshd_wrap() -> list[str]:
    """sshd -T needs /run/sshd: give it a private /run instead of touching the host's."""
    return ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none /run && mkdir -m 0755 /run/sshd && exec "$@"', "sh"]


@needs_mount_namespace
@pytest.mark.parametrize("case", ["good", *BAD_SSHD])
def test_sshd_check_with_real_sshd(tmp_path: Path, case: str) -> None:
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs sshd (apt-get install openssh-server)")
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {key}\n" + (GOOD_SSHD if case == "good" else BAD_SSHD[case]))
    ok, detail = outcome(make_device(tmp_path), "sshd-no-passwords", extra=("--sshd-config", str(config)),
                         wrap=sshd_wrap())
    assert ok is (case == "good"), f"{case}: {detail}"


@needs_mount_namespace
@pytest.mark.parametrize(("fill_kib", "ok"), [(256, True), (1000, False)])
def test_disk_check_on_a_small_data_partition(tmp_path: Path, fill_kib: int, ok: bool) -> None:
    device = make_device(tmp_path)
    data = device.root / "data"
    script = (f"mount -t tmpfs -o size=1m none {data} && mkdir {data}/pyvorin-edge && "
              f'head -c {fill_kib * 1024} /dev/zero > {data}/fill; exec "$@"')
    passed, detail = outcome(device, "disk", wrap=["unshare", "-m", "sh", "-c", script, "sh"])
    assert passed is ok, detail


def test_disk_check_passes_on_the_fixture_root(tmp_path: Path) -> None:
    # The test machine's own disk: well below 90 % on CI.
    passed, detail = outcome(make_device(tmp_path), "disk")
    assert passed, detail


def test_human_output_and_exit_status(tmp_path: Path) -> None:
    device = make_device(tmp_path)
    args = ["--root", str(device.root), "--only", "root-read-only", "--only", "thermal"]
    result = run_verify(*args, env=device.env())
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        "PASS  root-read-only  / (ext4) is mounted ro",
        "PASS  thermal         thermal_zone0 48.0 °C, thermal_zone1 51.5 °C (limit 75 °C)",
        "deployment verified: 2 of 2 checks pass",
    ]
    device.write("/sys/class/thermal/thermal_zone0/temp", "90000\n")
    result = run_verify(*args, env=device.env())
    assert result.returncode == 1
    assert result.stdout.splitlines()[1].startswith("FAIL  thermal ")
    assert result.stdout.splitlines()[-1] == "deployment NOT verified: 1 of 2 checks pass"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run_verify("--only", "no-such-check")
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr
    listed = run_verify("--list")
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == list(CHECKS)


@needs_mount_namespace
def test_whole_checklist_passes_on_a_good_device_and_fails_on_one_bad_check(
        tmp_path: Path, sources: Sources, start_agent: AgentStarter) -> None:
    """Every check at once, with the real agent, nft and sshd, in one private network and
    mount namespace (loopback brought up for the agent; nsenter runs the tool there)."""
    if shutil.which("nft") is None or shutil.which("nsenter") is None or not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs nft, nsenter and sshd")
    rules = tmp_path / "rules.nft"
    rules.write_text(GOOD_RULES)
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sshd_config = tmp_path / "sshd_config"
    sshd_config.write_text(f"HostKey {key}\n{GOOD_SSHD}")
    lo_up = ("import socket,fcntl,struct;s=socket.socket();"
             "fcntl.ioctl(s,0x8914,struct.pack('16sH14x',b'lo',1))")  # SIOCSIFFLAGS lo IFF_UP
    setup = (f"mount -t tmpfs none /run && mkdir -m 0755 /run/sshd && python3 -c \"{lo_up}\" && "
             f'nft -f {rules} && exec "$@"')
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "agent-data", sources),
                        wrap=["unshare", "-m", "-n", "sh", "-c", setup, "sh"])
    device = make_device(tmp_path, port=agent.port)
    device.systemd("active", pid=agent.process.pid)
    device.write(f"/proc/{agent.process.pid}/attr/apparmor/current", "pyv-edge-agent (enforce)\n")
    enter = ["nsenter", "-t", str(agent.process.pid), "-m", "-n", "--"]
    start = time.monotonic()
    document = verify(device, extra=("--sshd-config", str(sshd_config)), wrap=enter)
    assert [c["name"] for c in document["checks"]] == list(CHECKS)
    assert document["ok"], [c for c in document["checks"] if not c["ok"]]
    assert time.monotonic() - start < 20
    device.write("/etc/systemd/journald.conf.d/zz.conf", "[Journal]\nSystemMaxFileSize=64M\n")
    document = verify(device, extra=("--sshd-config", str(sshd_config)), wrap=enter)
    assert [c["name"] for c in document["checks"] if not c["ok"]] == ["journald-caps"]


def test_thermal_passes_without_zones_only_when_the_agent_has_its_metric_off(tmp_path: Path) -> None:
    """A board without a sensor (the QEMU device) is configured with thermal_zone = "": then no
    zone is no fault; with the default config it stays one."""
    device = make_device(tmp_path)
    shutil.rmtree(device.root / "sys/class/thermal")
    ok, detail = outcome(device, "thermal")
    assert not ok and "no readable thermal zone" in detail
    device.write("/etc/pyvorin-edge/config.toml", '[agent]\ndata_dir = "/data/pyvorin-edge"\n[http]\nport = 8080\n'
                                                  '[metrics]\nthermal_zone = ""\n').chmod(0o640)
    ok, detail = outcome(device, "thermal")
    assert ok and "metric is off" in detail
