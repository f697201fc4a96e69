"""The firewall fails closed under real systemd: no firewall, no network.

systemd 252 as PID 1 in a container (``systemd_container``) with the layer's
``pyvorin-firewall.service`` and ruleset rendered as the recipe renders them,
and its ``systemd-networkd.service`` drop-in. With a good ruleset the firewall
loads and networkd starts; with a ruleset nft refuses, networkd must not start
(network-pre.target alone only orders, so the interfaces used to come up open).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from test_hardening_config import FILES, render

import systemd_container

SPEC = systemd_container.RootfsSpec("firewall-unit", packages=("nftables",))
UNITS = "/usr/lib/systemd/system"


@pytest.fixture(scope="module")
def rootfs() -> systemd_container.Rootfs:
    systemd_container.require()
    return systemd_container.build_rootfs(SPEC)


def _device(rootfs: systemd_container.Rootfs, workdir: Path,
            ruleset: str) -> Iterator[systemd_container.SystemdContainer]:
    with systemd_container.SystemdContainer(rootfs.path, workdir) as c:
        c.write(f"{UNITS}/pyvorin-firewall.service", render("pyvorin-firewall.service"))
        c.write(f"{UNITS}/systemd-networkd.service.d/50-pyvorin-firewall.conf",
                (FILES / "networkd-firewall.conf").read_text())
        c.write("/usr/share/pyvorin/firewall.nft", ruleset)
        c.enable("pyvorin-firewall.service", "sysinit.target")
        c.enable("systemd-networkd.service")
        c.boot()
        yield c


@pytest.fixture
def good(rootfs: systemd_container.Rootfs, tmp_path: Path) -> Iterator[systemd_container.SystemdContainer]:
    yield from _device(rootfs, tmp_path / "good", render("firewall.nft.in"))


@pytest.fixture
def broken(rootfs: systemd_container.Rootfs, tmp_path: Path) -> Iterator[systemd_container.SystemdContainer]:
    yield from _device(rootfs, tmp_path / "broken", render("firewall.nft.in").replace("ct state invalid",
                                                                                      "ct state bogus"))


def test_good_ruleset_then_network(good: systemd_container.SystemdContainer) -> None:
    good.wait_active("pyvorin-firewall.service")
    good.wait_active("systemd-networkd.service")
    ruleset = good.run("nft", "list", "ruleset").stdout
    assert "policy drop" in ruleset, ruleset


def test_broken_ruleset_keeps_the_network_down(broken: systemd_container.SystemdContainer) -> None:
    firewall = broken.show("pyvorin-firewall.service", "ActiveState", "Result")
    networkd = broken.show("systemd-networkd.service", "ActiveState")
    assert firewall["ActiveState"] == "failed", firewall
    assert networkd["ActiveState"] != "active", (networkd, broken.journal("systemd-networkd.service"))
    assert "Dependency failed" in broken.journal() or "dependency" in broken.status("systemd-networkd.service")
