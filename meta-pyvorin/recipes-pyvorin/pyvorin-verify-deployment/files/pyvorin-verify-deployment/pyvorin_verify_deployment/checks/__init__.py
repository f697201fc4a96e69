"""The checklist, in the order an operator reads it."""

from __future__ import annotations

from collections.abc import Callable

from pyvorin_verify_deployment.checks import agentfiles, firewall, limits, service, system
from pyvorin_verify_deployment.context import Context
from pyvorin_verify_deployment.result import Result

Check = Callable[[Context], Result]

CHECKS: dict[str, tuple[str, Check]] = {
    "service-active": ("the agent's systemd unit is active", service.service_active),
    "health": ("GET /health answers status healthy", service.health),
    "config-readable": ("config.toml exists, parses, is not world-writable", agentfiles.config_readable),
    "databases-writable": ("edge_store.db and sync_queue.db are WAL databases the agent can write",
                           agentfiles.databases_writable),
    "backups-present": ("a recent, intact backup set exists", agentfiles.backups_present),
    "journald-caps": ("journald disk use is capped for the SD card", system.journald_caps),
    "firewall": ("nftables drops input by default, SSH only from a subnet, agent port only on loopback",
                 firewall.firewall),
    "sshd-no-passwords": ("sshd accepts keys only", system.sshd_no_passwords),
    "root-read-only": ("/ is mounted read-only", system.root_read_only),
    "apparmor-agent": ("the agent runs confined by its AppArmor profile in enforce mode", service.apparmor_agent),
    "thermal": ("every thermal zone is below the agent's limit", limits.thermal),
    "disk": ("the data file system is below the agent's limit", limits.disk),
}
