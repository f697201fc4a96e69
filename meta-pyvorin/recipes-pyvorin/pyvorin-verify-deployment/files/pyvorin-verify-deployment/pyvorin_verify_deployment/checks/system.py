"""Checks on the image's system configuration: journald caps, sshd, the root mount."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from pyvorin_verify_deployment.context import Context
from pyvorin_verify_deployment.mounts import read_mounts
from pyvorin_verify_deployment.result import Result, failed, passed

# journald.conf(5): the main file, then drop-ins from these directories ordered by file
# name, a drop-in in an earlier directory hiding one of the same name in a later one.
JOURNALD_MAIN = "/etc/systemd/journald.conf"
JOURNALD_DROPIN_DIRS = ("/etc/systemd/journald.conf.d", "/run/systemd/journald.conf.d",
                        "/usr/local/lib/systemd/journald.conf.d", "/usr/lib/systemd/journald.conf.d")
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]?)B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """systemd's size syntax, base 1024: "256M", "1.5G", "4096"."""
    match = SIZE.match(text)
    if not match:
        return None
    power = " KMGTPE".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * (1024 ** power))


def journald_settings(ctx: Context) -> dict[str, str]:
    files = [ctx.path(JOURNALD_MAIN)]
    dropins: dict[str, PurePosixPath] = {}
    for directory in reversed(JOURNALD_DROPIN_DIRS):
        local = ctx.path(directory)
        if local.is_dir():
            for entry in local.glob("*.conf"):
                dropins[entry.name] = PurePosixPath(directory) / entry.name
    files += [ctx.path(dropins[n]) for n in sorted(dropins)]
    settings: dict[str, str] = {}
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Journal" and "=" in line:
                key, _, value = line.partition("=")
                settings[key.strip()] = value.strip()
    return settings


def journald_caps(ctx: Context) -> Result:
    name = "journald-caps"
    settings = journald_settings(ctx)
    problems = []
    for key, limit in (("SystemMaxUse", ctx.expect.journald_max_use),
                       ("SystemMaxFileSize", ctx.expect.journald_max_file_size)):
        value = settings.get(key)
        size = parse_size(value) if value else None
        if size is None or size == 0:
            problems.append(f"{key} is {'unset' if not value else repr(value)} (want at most {limit >> 20}M)")
        elif size > limit:
            problems.append(f"{key}={value} exceeds {limit >> 20}M")
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, f"SystemMaxUse={settings['SystemMaxUse']}, SystemMaxFileSize={settings['SystemMaxFileSize']}")


def sshd_no_passwords(ctx: Context) -> Result:
    """From `sshd -T` (the effective configuration, Includes resolved).  Keyboard-interactive
    counts as password login: with UsePAM it asks PAM, which asks for the password."""
    name = "sshd-no-passwords"
    argv = ["sshd", "-T"] + (["-f", ctx.sshd_config] if ctx.sshd_config else [])
    result = ctx.run(*argv)
    if result.returncode != 0:
        return failed(name, f"{' '.join(argv)} failed: {(result.stderr or result.stdout).strip()[:200]}")
    effective = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    wanted = {"passwordauthentication": "no", "kbdinteractiveauthentication": "no", "permitemptypasswords": "no"}
    wrong = [f"{key} {effective.get(key, '?')}" for key, value in wanted.items() if effective.get(key) != value]
    if wrong:
        return failed(name, f"sshd allows passwords: {', '.join(wrong)}")
    return passed(name, "passwordauthentication no, kbdinteractiveauthentication no")


def root_read_only(ctx: Context) -> Result:
    name = "root-read-only"
    try:
        roots = [m for m in read_mounts(ctx.path("/proc/self/mounts")) if m.point == PurePosixPath("/")]
    except OSError as exc:
        return failed(name, f"/proc/self/mounts: {exc.strerror}")
    if not roots:
        return failed(name, "no mount for / in /proc/self/mounts")
    top = roots[-1]  # what is visible at / is the last mount stacked there
    if "ro" in top.options:
        return passed(name, f"/ ({top.fstype}) is mounted ro")
    return failed(name, f"/ ({top.fstype}) is mounted {','.join(sorted(top.options & {'rw', 'ro'})) or 'rw'}")
