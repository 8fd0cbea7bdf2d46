"""scripts/vagrant-box's recipe: the offline box holds every package scripts/setup would install.

In a lab VM there is no internet: a package scripts/setup finds missing there makes it call apt-get,
which fails, and with it the provisioning. So the box's list must cover setup's list.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bash_array(path: Path, name: str) -> list[str]:
    """The words of `NAME=(...)` (the first assignment; comments dropped)."""
    text = path.read_text()
    found = re.search(rf"^\s*{name}=\((.*?)\)", text, re.MULTILINE | re.DOTALL)
    assert found, f"{name}=(...) not in {path}"
    return [word for line in found.group(1).splitlines() for word in line.split("#")[0].split()]


def test_the_box_has_every_package_scripts_setup_installs() -> None:
    setup = bash_array(ROOT / "scripts" / "setup", "APT_PACKAGES")
    box = bash_array(ROOT / "scripts" / "vagrant-box", "WRAPDOCK_PACKAGES")
    assert "iproute2" in setup and "python3-venv" in setup
    assert set(setup) <= set(box), f"missing in the box: {sorted(set(setup) - set(box))}"


def test_the_box_has_what_vagrants_debian_guest_needs() -> None:
    boot = set(bash_array(ROOT / "scripts" / "vagrant-box", "BOOT_PACKAGES"))
    # a kernel and a boot loader; sshd and sudo for Vagrant; hostnamectl talks over dbus; Vagrant's
    # network configuration of a Debian guest writes /etc/network/interfaces and runs ifup; rsync folders
    assert {"linux-image-amd64", "grub-pc-bin", "openssh-server", "sudo", "dbus", "ifupdown", "isc-dhcp-client",
            "rsync"} <= boot


def test_the_box_has_etcd_for_the_cluster_overlay_but_does_not_start_it() -> None:
    script = ROOT / "scripts" / "vagrant-box"
    assert {"etcd-server", "etcd-client"} <= set(bash_array(script, "CLUSTER_PACKAGES"))
    assert "${CLUSTER_PACKAGES[*]}" in script.read_text()
    # Debian enables etcd.service; every VM would run an etcd of its own: only lab1's provisioning enables it
    assert 'systemctl disable --quiet etcd.service' in script.read_text()
    assert "systemctl enable --quiet etcd.service" in (ROOT / "Vagrantfile").read_text()
