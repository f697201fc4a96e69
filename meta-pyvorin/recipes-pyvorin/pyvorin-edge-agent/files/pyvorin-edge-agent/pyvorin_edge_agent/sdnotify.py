"""The sd_notify protocol without libsystemd: one datagram per state change to
$NOTIFY_SOCKET.  READY=1 tells systemd (Type=notify) that the HTTP port is
listening; WATCHDOG=1 must arrive within WatchdogSec or systemd restarts us."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is the abstract namespace, spelled with a leading NUL on the wire.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, *states: str) -> bool:
        """Send ``states`` (e.g. "READY=1"); False when not run by systemd or it fails."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(states).encode())
        except OSError:
            # A lost notification is systemd's problem to time out on, never a reason to crash.
            return False
        return True


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WatchdogSec, as sd_watchdog_enabled(3) advises."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process of the unit
    return int(usec) / 2_000_000
