"""The pyvorin-hardening drop-ins, each judged by the program that reads it.

- sshd: ``sshd -t`` and ``sshd -T`` (effective values) on the drop-in included
  by an oe-core-like sshd_config that tries to weaken it;
- nftables: the ruleset rendered by the recipe's own Python and sed lines,
  ``nft -c -f`` in a private network namespace, then loaded into a namespace
  and probed with real TCP connections over a veth pair;
- journald: Debian's systemd-journald parses the drop-in (as a journal
  namespace, in a private mount namespace) and must not complain;
- system.conf.d: every key is one PID 1 knows, every time span parses with
  ``systemd-analyze timespan``;
- audit: every syscall is in auditd's aarch64 table (``ausyscall``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import ROOT, RecipeData, RecipeFatal, recipe_functions, require, unavailable

LAYER = ROOT / "meta-pyvorin"
RECIPE = LAYER / "recipes-core" / "pyvorin-hardening" / "pyvorin-hardening_1.0.bb"
FILES = RECIPE.parent / "files"


def _need_root_and(*tools: str) -> None:
    require(*tools)
    if os.geteuid() != 0:
        unavailable("needs root (private mount/network namespaces)")


# --- the recipe's own rendering ---------------------------------------------

def _recipe_defaults() -> dict[str, str]:
    return dict(re.findall(r'^(PYVORIN_\w+) \?\?= "(.*)"$', RECIPE.read_text(), re.M))


def render(source: str, **overrides: str) -> str:
    """Render files/<source> exactly as do_install's sed lines do."""
    values = {**_recipe_defaults(), "sbindir": "/usr/sbin", "datadir": "/usr/share", **overrides}
    data = RecipeData(values)
    functions = recipe_functions(RECIPE)

    def expand(text: str) -> str:
        """BitBake's expansion, done before the shell sees the line: ${@python}, ${VAR}."""
        text = re.sub(r"\$\{@([^}]*)\}", lambda m: str(eval(m.group(1), {**functions, "d": data})), text)  # noqa: S307
        return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)

    install = re.search(r"^do_install\(\) \{\n(.*?)^\}", RECIPE.read_text(), re.M | re.S)
    assert install
    for command in install.group(1).replace("\\\n", " ").splitlines():
        if not command.strip().startswith("sed ") or f"${{S}}/{source} " not in command:
            continue
        words = shlex.split(expand(command))
        text = (FILES / source).read_text()
        for i, word in enumerate(words):
            if word == "-e":
                expression = words[i + 1]
                _, pattern, replacement, flags = expression.split(expression[1])
                text = text.replace(pattern, replacement) if "g" in flags else text.replace(pattern, replacement, 1)
        left = re.findall(r"@[A-Z0-9_]+@", text)
        assert not left, f"{source}: placeholders not rendered by do_install: {left}"
        return text
    raise AssertionError(f"do_install renders no {source}")


def test_recipe_rendering_refuses_bad_firewall_variables() -> None:
    with pytest.raises(RecipeFatal, match="not a network"):
        render("firewall.nft.in", PYVORIN_FW_MGMT_SUBNETS="10.0.0.1/8")  # host bits set
    with pytest.raises(RecipeFatal, match="TCP port"):
        render("firewall.nft.in", PYVORIN_SSH_PORT="ssh")
    with pytest.raises(RecipeFatal, match="TCP port"):
        render("firewall.nft.in", PYVORIN_FW_MQTT_PORT="70000")
    text = render("firewall.nft.in", PYVORIN_FW_MGMT_SUBNETS="192.168.10.0/24 fd00:10::/64 10.1.0.0/16")
    assert "elements = { 192.168.10.0/24, 10.1.0.0/16 }" in text
    assert "elements = { fd00:10::/64 }" in text


# --- sshd ---------------------------------------------------------------------

# oe-core's sshd_config as installed (openssh 9.6, PAM): the Include comes
# first. The weakening lines after it must lose, since sshd keeps the first value.
OE_SSHD_CONFIG = """\
Include {dropins}/*.conf
HostKey {hostkey}
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin yes
PasswordAuthentication yes
AllowTcpForwarding yes
X11Forwarding yes
#Port 22
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp /usr/libexec/sftp-server
"""


def _sshd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # sshd insists on its privilege separation directory: give it one in a
    # private mount namespace instead of creating it on the host.
    script = 'mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", shutil.which("sshd") or "sshd",
                           "-f", str(config), *args], capture_output=True, text=True, check=False)


@pytest.fixture
def sshd_config(tmp_path: Path) -> Callable[[str], Path]:
    _need_root_and("sshd", "ssh-keygen", "unshare")
    hostkey = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], check=True)
    dropins = tmp_path / "sshd_config.d"
    dropins.mkdir()

    def make(dropin: str) -> Path:
        (dropins / "50-pyvorin.conf").write_text(dropin)
        main = tmp_path / "sshd_config"
        main.write_text(OE_SSHD_CONFIG.format(dropins=dropins, hostkey=hostkey))
        return main

    return make


def test_sshd_accepts_the_policy_and_it_wins(sshd_config: Callable[[str], Path]) -> None:
    config = sshd_config(render("sshd_config.in", PYVORIN_SSH_PORT="2222"))
    checked = _sshd(config, "-t")
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    dumped = _sshd(config, "-T", "-C", "user=root,host=mgmt,addr=192.0.2.10")
    assert dumped.returncode == 0, dumped.stderr
    effective = dict(line.split(" ", 1) for line in dumped.stdout.splitlines() if " " in line)
    # Port adds up across files (oe-core leaves its own commented out).
    assert [ln for ln in dumped.stdout.splitlines() if ln.startswith("port ")] == ["port 2222"]
    expected = {
        "permitrootlogin": "no", "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no", "pubkeyauthentication": "yes",
        "authenticationmethods": "publickey", "permitemptypasswords": "no", "hostbasedauthentication": "no",
        "allowtcpforwarding": "no", "allowagentforwarding": "no", "x11forwarding": "no", "permittunnel": "no",
        "maxauthtries": "3", "permituserenvironment": "no",
        "authorizedkeysfile": "/etc/ssh/authorized_keys/%u",
    }
    wrong = {k: (effective.get(k), v) for k, v in expected.items() if effective.get(k) != v}
    assert not wrong, f"effective sshd settings (got, wanted): {wrong}"


def test_sshd_check_rejects_a_broken_option(sshd_config: Callable[[str], Path]) -> None:
    config = sshd_config(render("sshd_config.in") + "PermitRootLogin maybe\n")
    result = _sshd(config, "-t")
    assert result.returncode != 0 and "50-pyvorin.conf line" in result.stderr and "maybe" in result.stderr


# --- nftables -------------------------------------------------------------------

def _nft_check(ruleset: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(ruleset)], capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("variables", [
    {},
    {"PYVORIN_FW_MGMT_SUBNETS": "192.168.10.0/24 fd00:10::/64", "PYVORIN_FW_MQTT_PORT": "8883"},
    {"PYVORIN_SSH_PORT": "2222", "PYVORIN_AGENT_HEALTH_PORT": "9090", "PYVORIN_FW_MGMT_SUBNETS": "10.0.0.0/8",
     "PYVORIN_FW_ICMP_RATE": "5/second"},
], ids=["defaults", "mgmt-and-mqtt", "custom-ports"])
def test_nft_accepts_the_rendered_ruleset(variables: dict[str, str], tmp_path: Path) -> None:
    _need_root_and("nft", "unshare")
    ruleset = tmp_path / "firewall.nft"
    ruleset.write_text(render("firewall.nft.in", **variables))
    result = _nft_check(ruleset)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_nft_check_rejects_a_broken_ruleset(tmp_path: Path) -> None:
    _need_root_and("nft", "unshare")
    ruleset = tmp_path / "broken.nft"
    ruleset.write_text(render("firewall.nft.in").replace("ct state invalid", "ct state bogus"))
    result = _nft_check(ruleset)
    assert result.returncode != 0 and "bogus" in result.stderr


class NetNS:
    """A named network namespace, removed afterwards."""

    def __init__(self, name: str) -> None:
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *args], capture_output=True, text=True,
                              check=check)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


LISTENER = textwrap.dedent("""\
    import socket, sys
    servers = []
    for port in map(int, sys.argv[1:]):
        for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((address, port)); s.listen(8); servers.append(s)
    print("ready", flush=True)
    sys.stdin.read()
""")
CONNECT = textwrap.dedent("""\
    import socket, sys
    source, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(1.0)
    s.bind((source, 0))
    try:
        s.connect((target, port)); print("open")
    except OSError:
        print("blocked")
""")


@pytest.fixture
def device_and_peer() -> Iterator[tuple[NetNS, NetNS]]:
    _need_root_and("ip", "nft")
    tag = uuid.uuid4().hex[:6]
    device, peer = NetNS(f"pyv-dev-{tag}"), NetNS(f"pyv-peer-{tag}")
    try:
        subprocess.run(["ip", "link", "add", f"pv{tag}a", "netns", device.name, "type", "veth",
                        "peer", "name", f"pv{tag}b", "netns", peer.name], check=True)
        for ns, link, addresses in ((device, f"pv{tag}a", ["192.168.10.1/24", "10.99.0.1/24", "fd00:10::1/64"]),
                                    (peer, f"pv{tag}b", ["192.168.10.2/24", "10.99.0.2/24", "fd00:10::2/64",
                                                         "fd00:99::2/64"])):
            for address in addresses:
                ns.run("ip", "address", "add", address, "dev", link, "nodad")
            ns.run("ip", "link", "set", link, "up")
            ns.run("ip", "link", "set", "lo", "up")
        device.run("ip", "-6", "route", "add", "fd00:99::/64", "dev", f"pv{tag}a")
        yield device, peer
    finally:
        device.delete()
        peer.delete()


def test_firewall_behaves_as_documented(device_and_peer: tuple[NetNS, NetNS], tmp_path: Path) -> None:
    """SSH only from the management networks, MQTT when enabled, the health
    port never from outside, all else dropped; loopback untouched."""
    device, peer = device_and_peer
    ruleset = tmp_path / "firewall.nft"
    ruleset.write_text(render("firewall.nft.in", PYVORIN_FW_MGMT_SUBNETS="192.168.10.0/24 fd00:10::/64",
                              PYVORIN_FW_MQTT_PORT="8883", PYVORIN_SSH_PORT="2222"))
    device.run("nft", "-f", str(ruleset))
    listener = device.popen("python3", "-c", LISTENER, "2222", "8883", "8080", "5000")
    try:
        assert listener.stdout and listener.stdout.readline().strip() == "ready"

        def probe(ns: NetNS, source: str, target: str, port: int) -> str:
            return ns.run("python3", "-c", CONNECT, source, target, str(port)).stdout.strip()

        cases = [
            (peer, "192.168.10.2", "192.168.10.1", 2222, "open"),     # management net, SSH
            (peer, "fd00:10::2", "fd00:10::1", 2222, "open"),         # management net v6
            (peer, "10.99.0.2", "10.99.0.1", 2222, "blocked"),        # other net, SSH
            (peer, "fd00:99::2", "fd00:10::1", 2222, "blocked"),      # other net v6
            (peer, "10.99.0.2", "10.99.0.1", 8883, "open"),           # MQTT enabled
            (peer, "192.168.10.2", "192.168.10.1", 8080, "blocked"),  # health port from outside
            (peer, "192.168.10.2", "192.168.10.1", 5000, "blocked"),  # anything else
            (device, "127.0.0.1", "127.0.0.1", 8080, "open"),         # health port on loopback
            (device, "::1", "::1", 8080, "open"),
        ]
        results = [(f"{src}->{dst}:{port}", probe(ns, src, dst, port), want) for ns, src, dst, port, want in cases]
        wrong = [r for r in results if r[1] != r[2]]
        assert not wrong, f"(connection, got, wanted): {wrong}"
        # Pings pass, within the rate limit.
        ping = peer.run("ping", "-c", "2", "-i", "0.2", "-W", "1", "10.99.0.1", check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        counters = device.run("nft", "list", "chain", "inet", "pyvorin", "input").stdout
        assert re.search(r'iif != "lo" tcp dport 8080 counter packets [1-9]', counters), counters
    finally:
        listener.kill()
        listener.wait()
        for pipe in (listener.stdin, listener.stdout):
            if pipe:
                pipe.close()


def test_defaults_keep_ssh_and_mqtt_closed() -> None:
    text = render("firewall.nft.in")
    sets = dict(re.findall(r"set (\w+) \{(.*?)\}", text, re.S))
    assert all("elements" not in body for body in sets.values()), sets
    assert "tcp dport 22 ip saddr @mgmt4" in text and "tcp dport 8080" in text


# --- journald ------------------------------------------------------------------

def _journald_parse(config: str, tmp_path: Path) -> str:
    """Start Debian's systemd-journald as journal namespace 'pyvorintest' in a
    private mount namespace (tmpfs /run, /var/log, /etc/systemd) just long
    enough to parse its configuration; return what it said about it."""
    staged = tmp_path / "journald.conf"
    staged.write_text(config)
    journald = "/lib/systemd/systemd-journald"
    script = (
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd; mount -t tmpfs tmpfs /var/log; "
        "mount -t tmpfs tmpfs /etc/systemd; mkdir -p /etc/systemd/journald@pyvorintest.conf.d; "
        f"cp {shlex.quote(str(staged))} /etc/systemd/journald@pyvorintest.conf.d/60-pyvorin.conf; "
        f"SYSTEMD_LOG_TARGET=console timeout 2 {journald} pyvorintest || true"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=False)
    return result.stdout + result.stderr


def test_journald_parses_the_caps_without_complaint(tmp_path: Path) -> None:
    _need_root_and("unshare")
    if not Path("/lib/systemd/systemd-journald").exists():
        unavailable("needs systemd-journald")
    text = (FILES / "journald.conf").read_text()
    for key, value in {"SystemMaxUse": "256M", "SystemMaxFileSize": "32M", "MaxFileSec": "1week"}.items():
        assert re.search(rf"^{key}={value}$", text, re.M), f"{key}={value} missing"
    output = _journald_parse(text, tmp_path)
    complaints = [ln for ln in output.splitlines() if "60-pyvorin.conf" in ln]
    assert not complaints, "\n".join(complaints)


def test_journald_check_catches_a_bad_key(tmp_path: Path) -> None:
    _need_root_and("unshare")
    if not Path("/lib/systemd/systemd-journald").exists():
        unavailable("needs systemd-journald")
    output = _journald_parse("[Journal]\nSystemMaxUsage=1G\nMaxFileSec=weekly\n", tmp_path)
    assert "Unknown key" in output and "SystemMaxUsage" in output, output
    assert "weekly" in output, output


def test_tmpfiles_puts_the_journal_on_data(tmp_path: Path) -> None:
    """Debian's systemd-tmpfiles applies the layer's entries to an image-like root.

    /var/log is oe-core's link to volatile/log on a fresh tmpfs; afterwards
    /var/log/journal must lead to /data/log/journal, setgid systemd-journal.
    """
    _need_root_and("systemd-tmpfiles")
    root = tmp_path / "root"
    for directory in ("var/volatile", "data", "etc", "usr/lib/tmpfiles.d"):
        (root / directory).mkdir(parents=True)
    (root / "var/log").symlink_to("volatile/log")
    (root / "etc/group").write_text("root:x:0:\nsystemd-journal:x:101:\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    conf = root / "usr/lib/tmpfiles.d/pyvorin-journal.conf"
    shutil.copy(FILES / "pyvorin-journal.tmpfiles", conf)
    result = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(conf)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    link = root / "var/volatile/log/journal"
    assert os.readlink(link) == "/data/log/journal"
    journal = root / "data/log/journal"
    info = journal.stat()
    assert oct(info.st_mode & 0o7777) == "0o2755" and info.st_gid == 101, oct(info.st_mode)
    # A second boot finds everything in place and changes nothing.
    again = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(conf)],
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0 and not again.stderr.strip(), again.stderr


# --- system.conf.d ------------------------------------------------------------------

def test_system_conf_keys_are_known_to_pid1_and_values_parse() -> None:
    require("systemd-analyze")
    binary = Path("/lib/systemd/systemd")
    if not binary.exists():
        unavailable("needs /lib/systemd/systemd")
    known = set(re.findall(rb"Default[A-Z][A-Za-z]+", binary.read_bytes()))
    text = (FILES / "system.conf").read_text()
    assert "[Manager]" in text.splitlines()
    problems = []
    settings = re.findall(r"^(\w+)=(.*)$", text, re.M)
    assert ("DefaultLimitCORE", "0") in settings
    for key, value in settings:
        if key.encode() not in known:
            problems.append(f"{key}: not a [Manager] setting of systemd")
        if key.endswith("Sec"):
            parsed = subprocess.run(["systemd-analyze", "timespan", value], capture_output=True, text=True,
                                    check=False)
            if parsed.returncode != 0:
                problems.append(f"{key}={value}: {parsed.stderr.strip()}")
    assert not problems, "\n".join(problems)


# --- audit ------------------------------------------------------------------------

def _aarch64_syscalls() -> set[str]:
    require("ausyscall")
    out = subprocess.run(["ausyscall", "aarch64", "--dump"], capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) == 2}


def audit_problems(text: str, syscalls: set[str]) -> list[str]:
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if words[0] == "-w":
            if not (len(words) == 6 and words[1].startswith("/") and words[2] == "-p"
                    and re.fullmatch(r"[rwxa]+", words[3]) and words[4] == "-k"):
                problems.append(f"{number}: malformed watch: {line}")
        elif words[0] == "-a":
            if words[1] not in ("always,exit", "exit,always", "never,exit"):
                problems.append(f"{number}: unknown list/action {words[1]}")
            if "-F" not in words or "arch=b64" not in words:
                problems.append(f"{number}: syscall rule without -F arch=b64")
            for i, word in enumerate(words):
                if word == "-S":
                    unknown = [s for s in words[i + 1].split(",") if s not in syscalls]
                    if unknown:
                        problems.append(f"{number}: not aarch64 syscalls: {unknown}")
        elif words[0] == "-e":
            if words[1:] not in (["0"], ["1"], ["2"]):
                problems.append(f"{number}: -e takes 0, 1 or 2")
        else:
            problems.append(f"{number}: unexpected rule {line}")
    return problems


def test_audit_rules_use_only_aarch64_syscalls() -> None:
    syscalls = _aarch64_syscalls()
    text = (FILES / "audit.rules").read_text()
    assert not audit_problems(text, syscalls), audit_problems(text, syscalls)
    for watched in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/sudoers"):
        assert f"-w {watched} " in text
    assert re.search(r"-S execve,execveat", text)


def test_audit_check_rejects_x86_only_syscalls() -> None:
    problems = audit_problems("-a always,exit -F arch=b64 -S open,creat,execve -k x\n", _aarch64_syscalls())
    assert problems and "open" in problems[0] and "creat" in problems[0] and "execve'" not in problems[0]
