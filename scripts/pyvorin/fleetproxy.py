"""The nginx configuration in front of a hawkBit DDI server (goosebit): the
devices' endpoint, with mutual TLS that means something.

goosebit has no TLS of its own and never sees a client certificate, so the
proxy does what a device certificate is for: it requires one the fleet CA
signed and that is not on the CRL, and lets a device reach only its own
controller path (the certificate's common name must be the controller ID in
``/<tenant>/controller/v1/<id>``). Nothing else of the server (its admin API
and UI) is reachable through it. Downloads are streamed and keep ``Range``,
so suricatta resumes a broken one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import PyvorinError

_ENDPOINT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_NGINX_UNSAFE = re.compile(r"[\s;{}'\"$#\\]")


@dataclass(frozen=True)
class ProxyConfig:
    listen: str  # host:port the devices connect to
    upstream: str  # host:port of goosebit (loopback)
    server_cert: Path
    server_key: Path
    fleet_ca: Path
    crl: Path
    state_dir: Path  # pid, logs and nginx's temporary files

    def __post_init__(self) -> None:
        for name in ("listen", "upstream"):
            value = getattr(self, name)
            match = _ENDPOINT.fullmatch(value)
            if not match or not 0 < int(match.group(2)) < 65536:
                raise PyvorinError(f"--{name} {value!r}: HOST:PORT")
        for name in ("server_cert", "server_key", "fleet_ca", "crl", "state_dir"):
            value = str(getattr(self, name))
            if not value.startswith("/") or _NGINX_UNSAFE.search(value):
                raise PyvorinError(f"{name.replace('_', '-')} {value!r}: an absolute path without spaces, quotes, "
                                   "';', braces, '$', '#' or backslashes (it goes into nginx.conf as it is)")


def render(config: ProxyConfig) -> str:
    state = config.state_dir
    return f"""\
# nginx in front of goosebit for the devices (pyvorin fleet proxy-config; docs/fleet.md).
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {state}/access.log;
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    # The certificate's common name: the device ID pyvorin-identity put there.
    map $ssl_client_s_dn $pyvorin_device {{
        "~(^|,)CN=(?<cn>[A-Za-z0-9._-]+)(,|$)" $cn;
        default "";
    }}
    server {{
        listen {config.listen} ssl;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {config.server_cert};
        ssl_certificate_key {config.server_key};
        # Only devices of this fleet, and none the fleet CA revoked.
        ssl_client_certificate {config.fleet_ca};
        ssl_crl {config.crl};
        ssl_verify_client on;
        ssl_verify_depth 1;
        # Bundles are large: stream them, never spool them to disk here.
        proxy_buffering off;
        proxy_request_buffering off;
        client_max_body_size 1m;
        location ~ ^/[A-Za-z0-9_-]+/controller/v1/(?<controller>[A-Za-z0-9._-]+)(/|$) {{
            # A device speaks for itself only.
            if ($controller != $pyvorin_device) {{ return 403; }}
            proxy_pass http://{config.upstream};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location / {{ return 404; }}
    }}
}}
"""
