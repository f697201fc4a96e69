"""The devices' side of the rollout server: Debian's nginx terminating TLS in
front of goosebit, as docs/fleet.md configures it for a user.

goosebit has no TLS of its own and never sees a client certificate, so the
proxy is what makes mutual TLS mean something: it requires a certificate the
fleet CA signed and that is not on the CRL, and it lets a device reach only
its own controller path (the certificate's common name must be the
controller ID in ``/<tenant>/controller/v1/<id>``). Nothing else of goosebit
(its admin API and UI) is reachable through it. The configuration is the
one docs/fleet.md shows, written by :func:`config`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet.goosebit import ServerError, free_port

NGINX = "/usr/sbin/nginx"


def missing() -> str | None:
    return None if Path(NGINX).exists() else f"{NGINX} is missing (scripts/test.sh installs Debian's nginx)"


def config(listen: str, upstream: str, server_cert: Path, server_key: Path, fleet_ca: Path, crl: Path,
           prefix: Path) -> str:
    """nginx.conf for the devices' endpoint (``listen`` host:port) in front of goosebit (``upstream``)."""
    return f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # The certificate's common name: the device ID pyvorin-identity put there.
    map $ssl_client_s_dn $pyvorin_device {{
        "~(^|,)CN=(?<cn>[A-Za-z0-9._-]+)(,|$)" $cn;
        default "";
    }}
    server {{
        listen {listen} ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        # Only devices of this fleet, and none the fleet CA revoked.
        ssl_client_certificate {fleet_ca};
        ssl_crl {crl};
        ssl_verify_client on;
        ssl_verify_depth 1;
        # Bundles are large: stream them, never spool them to disk here.
        proxy_buffering off;
        proxy_request_buffering off;
        location ~ ^/[A-Za-z0-9_-]+/controller/v1/(?<controller>[A-Za-z0-9._-]+)(/|$) {{
            # A device speaks for itself only.
            if ($controller != $pyvorin_device) {{ return 403; }}
            proxy_pass http://{upstream};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass
class MtlsProxy:
    work: Path
    upstream: str
    server_cert: Path
    server_key: Path
    fleet_ca: Path
    crl: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "nginx.conf"
        conf.write_text(config(f"127.0.0.1:{self.port}", self.upstream, self.server_cert, self.server_key,
                               self.fleet_ca, self.crl, self.work))
        checked = subprocess.run([NGINX, "-t", "-q", "-p", str(self.work), "-c", str(conf)],
                                 capture_output=True, text=True)
        if checked.returncode != 0:
            raise ServerError(f"nginx -t: {checked.stderr}")
        with open(self.work / "stderr.log", "wb") as stderr:  # the child keeps its own descriptor
            self.process = subprocess.Popen([NGINX, "-p", str(self.work), "-c", str(conf), "-g", "daemon off;"],
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"nginx exited {self.process.returncode}: {self.error_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise ServerError(f"nginx did not listen within {timeout:.0f}s: {self.error_tail()}")

    def reload_crl(self, crl: Path) -> None:
        """A new CRL, as an operator deploys one: copy it in place, reload nginx."""
        shutil.copy2(crl, self.crl)
        subprocess.run([NGINX, "-p", str(self.work), "-c", str(self.work / "nginx.conf"), "-s", "reload"],
                       check=True, capture_output=True)
        time.sleep(1)

    def error_tail(self, lines: int = 20) -> str:
        path = self.work / "error.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
