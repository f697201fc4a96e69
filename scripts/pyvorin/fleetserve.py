"""``pyvorin fleet serve``: the rollout server in one command.

goosebit (the hawkBit DDI server, installed with pip into its own venv) on
loopback, and Debian's nginx in front of it for the devices with the
configuration of :mod:`fleetproxy`. Everything it keeps lives in one data
directory (0700): goosebit's SQLite database and artifacts, its token key,
the administrator's password (made on the first start, 0600) and nginx's
configuration and state. Both run in the foreground as children: a signal
stops both, SIGHUP makes nginx read the CRL anew (after ``pyvorin fleet
revoke``), and if one dies the other is stopped and the command fails.

goosebit would otherwise need four things done by hand: its schema
(``aerich upgrade`` with the migrations in its wheel), a token key that
survives restarts, a database and artifacts outside site-packages, and its
first user (``POST /setup``, which 0.2.12 never closes: its port stays on
loopback).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import fleetproxy
from .errors import PyvorinError
from .fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, ensure_private_dir, write_atomic

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServeOptions:
    keys: Path
    data: Path
    listen: str = "0.0.0.0:8443"
    admin_port: int = 60053
    goosebit_venv: Path = Path("/opt/goosebit-venv")
    nginx: Path = Path("/usr/sbin/nginx")
    tenant: str = "DEFAULT"
    poll_time: str = "00:05:00"

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.admin_port}"


def _check(options: ServeOptions) -> None:
    for path, what in ((options.goosebit_venv / "bin/uvicorn", "goosebit (pip install goosebit==0.2.12 into "
                                                                "--goosebit-venv)"),
                       (options.nginx, "nginx (apt-get install nginx)"),
                       (options.keys / "fleet/ca.crt", "the fleet CA (pyvorin keys init KEYS --only fleet)"),
                       (options.keys / "fleet/crl.pem", "the fleet CRL (pyvorin fleet crl KEYS)"),
                       (options.data / "server/server.crt", "the server certificate (pyvorin fleet server-cert "
                                                            "KEYS --name HOST -o DATA/server)"),
                       (options.data / "server/server.key", "the server key")):
        if not path.exists():
            raise PyvorinError(f"{path}: missing: {what}")
    if not 0 < options.admin_port < 65536:
        raise PyvorinError(f"--admin-port {options.admin_port}: 1 to 65535")
    if not options.tenant.replace("_", "").replace("-", "").isalnum():
        raise PyvorinError(f"--tenant {options.tenant!r}: letters, digits, '-' and '_'")
    parts = options.poll_time.split(":")
    if len(parts) != 3 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise PyvorinError(f"--poll-time {options.poll_time!r}: HH:MM:SS")


def _site_packages(venv: Path) -> Path:
    found = subprocess.run([str(venv / "bin/python"), "-c",
                            "import goosebit, os; print(os.path.dirname(goosebit.__file__))"],
                           capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        raise PyvorinError(f"{venv}: goosebit does not import: {found.stderr.strip()[-300:]}")
    return Path(found.stdout.strip())


def prepare(options: ServeOptions) -> dict[str, str]:
    """The data directory, goosebit's settings and schema, nginx's configuration; goosebit's environment."""
    _check(options)
    data = options.data.absolute()
    ensure_private_dir(data)
    for sub in ("artifacts", "nginx"):
        ensure_private_dir(data / sub)
    key_file = data / "secret-key"
    if not key_file.exists():
        # goosebit signs its tokens with it; a new one each start would log every operator out.
        write_atomic(key_file, (secrets.token_hex(32) + "\n").encode(), mode=PRIVATE_FILE_MODE, overwrite=False)
    settings = {
        "tenant": options.tenant,
        "poll_time": options.poll_time,
        "db_uri": f"sqlite://{data}/goosebit.sqlite3",
        "artifacts_dir": str(data / "artifacts"),
        "secret_key": key_file.read_text().strip(),
        "track_device_ip": True,
        # goosebit's own logging setup silences uvicorn's: keep the access log.
        "logging": {"version": 1, "disable_existing_loggers": False,
                    "handlers": {"console": {"class": "logging.StreamHandler"}},
                    "root": {"level": "INFO", "handlers": ["console"]}},
    }
    write_atomic(data / "goosebit.yaml", json.dumps(settings, indent=1).encode(), mode=PRIVATE_FILE_MODE)
    migrations = _site_packages(options.goosebit_venv) / "db/migrations"
    write_atomic(data / "pyproject.toml",
                 (f'[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\n'
                  f'location = "{migrations}"\nsrc_folder = "./."\n').encode(), mode=PUBLIC_FILE_MODE)
    env = {**os.environ, "GOOSEBIT_SETTINGS": str(data / "goosebit.yaml")}
    migrated = subprocess.run([str(options.goosebit_venv / "bin/aerich"), "upgrade"], cwd=data, env=env,
                              capture_output=True, text=True, timeout=300)
    if migrated.returncode != 0:
        raise PyvorinError(f"aerich upgrade: {(migrated.stdout + migrated.stderr).strip()[-500:]}")
    config = fleetproxy.ProxyConfig(
        listen=options.listen, upstream=options.upstream, server_cert=data / "server/server.crt",
        server_key=data / "server/server.key", fleet_ca=options.keys.absolute() / "fleet/ca.crt",
        crl=options.keys.absolute() / "fleet/crl.pem", state_dir=data / "nginx")
    write_atomic(data / "nginx/nginx.conf", fleetproxy.render(config).encode(), mode=PUBLIC_FILE_MODE)
    checked = subprocess.run([str(options.nginx), "-t", "-q", "-p", str(data / "nginx"), "-c",
                              str(data / "nginx/nginx.conf")], capture_output=True, text=True, timeout=60)
    if checked.returncode != 0:
        raise PyvorinError(f"nginx -t: {checked.stderr.strip()[-500:]}")
    return env


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _first_admin(options: ServeOptions) -> Path | None:
    """goosebit's first user, once: its password in DATA/admin-password (0600)."""
    path = options.data / "admin-password"
    if path.exists():
        return None
    password = secrets.token_urlsafe(24)
    form = urllib.parse.urlencode({"username": "admin", "password": password}).encode()
    request = urllib.request.Request(f"http://{options.upstream}/setup", data=form, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own loopback server
            response.read()
    except OSError as exc:
        raise PyvorinError(f"goosebit's first administrator: {exc}") from exc
    write_atomic(path, (password + "\n").encode(), mode=PRIVATE_FILE_MODE, overwrite=False)
    return path


def serve(options: ServeOptions, say: Callable[[str], None] = print) -> int:
    """Run both servers until a signal (0) or until one of them dies (1)."""
    env = prepare(options)
    data = options.data.absolute()
    stopping = False
    reload = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    def hangup(signum: int, frame: object) -> None:
        nonlocal reload
        reload = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # SIGHUP: nginx reads its configuration and the CRL anew (after `pyvorin fleet revoke`).
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hangup)
    children: list[subprocess.Popen[bytes]] = []
    try:
        with open(data / "goosebit.log", "ab") as log:
            children.append(subprocess.Popen(
                [str(options.goosebit_venv / "bin/uvicorn"), "goosebit:app", "--host", "127.0.0.1",
                 "--port", str(options.admin_port), "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
                cwd=data, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(options.admin_port):
            if children[0].poll() is not None or time.monotonic() > deadline or stopping:
                raise PyvorinError(f"goosebit did not start (see {data / 'goosebit.log'})")
            time.sleep(0.3)
        made = _first_admin(options)
        if made:
            say(f"goosebit's administrator: admin, password in {made}")
        with open(data / "nginx/stderr.log", "ab") as log:
            children.append(subprocess.Popen(
                [str(options.nginx), "-p", str(data / "nginx"), "-c", str(data / "nginx/nginx.conf"),
                 "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=log))
        say(f"serving: devices on https://{options.listen} (mutual TLS), admin API on http://{options.upstream}")
        while not stopping:
            if reload:
                reload = False
                children[1].send_signal(signal.SIGHUP)
                say("nginx: configuration and CRL reloaded")
            if any(child.poll() is not None for child in children):
                dead = next(child for child in children if child.poll() is not None)
                name = "goosebit" if dead is children[0] else "nginx"
                raise PyvorinError(f"{name} exited {dead.returncode} "
                                   f"(see {data / 'goosebit.log'} and {data / 'nginx/error.log'})")
            time.sleep(0.5)
        say("stopping")
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
