"""Throwaway "VM hosts": libvirtd in its own namespaces, for the tests that boot Vagrant labs.

A VM host is PID 1 of fresh net + mount + pid + uts + ipc namespaces (tests/vm_init.sh) running libvirtd
over private copies of /etc/libvirt and /var/lib/libvirt, a private /run, /sys and /dev (without kvm).
`vagrant` runs in it through nsenter, with its own VAGRANT_HOME and .vagrant directory in a temporary
directory, so libvirt's networks, bridges, dnsmasq, iptables rules, domains, volumes and QEMU processes
never reach the machine: killing PID 1 ends them all, and the temporary directory holds every file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.sandbox import end_host, start_host

ROOT = Path(__file__).resolve().parents[1]
INIT = Path(__file__).with_name("vm_init.sh")
BOX_NAME = "wrapdock/bookworm"

# appended to the copies of libvirt's configuration: no AppArmor/SELinux labels or cgroups (the sandbox
# sees none), QEMU's output to files (no virtlogd), no remembered owners (no xattrs on the images)
QEMU_CONF = '\nsecurity_driver = "none"\ncgroup_controllers = [ ]\nstdio_handler = "file"\nremember_owner = 0\n'
LIBVIRTD_CONF = '\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'


def cannot_boot_vms() -> str | None:
    """Why this machine cannot run the VM tests, or None."""
    if os.environ.get("WRAPDOCK_VM_TESTS") == "0":
        return "WRAPDOCK_VM_TESTS=0: the tests that boot VMs are turned off"
    if os.geteuid() != 0:
        return "VM tests need root"
    for tool, package in [("unshare", "util-linux"), ("nsenter", "util-linux"), ("vagrant", "vagrant"),
                          ("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                          ("virsh", "libvirt-clients"), ("dnsmasq", "dnsmasq-base"),
                          ("debootstrap", "debootstrap"), ("sfdisk", "fdisk"), ("rsync", "rsync")]:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (package {package}: scripts/setup --tests installs it)"
    if not Path("/usr/sbin/libvirtd").exists():
        return "libvirtd is not installed (package libvirt-daemon-system: scripts/setup --tests)"
    if not list(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-libvirt-*")):
        return "the vagrant-libvirt plugin is not installed (package vagrant-libvirt: scripts/setup --tests)"
    if not Path("/dev/net/tun").exists():
        return "/dev/net/tun is missing (libvirt's networks need tap devices)"
    return None


def mirror_unreachable() -> str | None:
    """Why scripts/vagrant-box cannot reach the Debian mirror to build the box, or None."""
    mirror = os.environ.get("WRAPDOCK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    try:
        with urllib.request.urlopen(f"{mirror}/dists/bookworm/Release", timeout=20):
            return None
    except (OSError, ValueError) as error:
        return f"the Debian mirror {mirror} is unreachable ({error})"


def build_box(vagrant_home: Path) -> subprocess.CompletedProcess:
    """scripts/vagrant-box with this VAGRANT_HOME: the cached box (built once per recipe), added there."""
    return subprocess.run([str(ROOT / "scripts" / "vagrant-box")], capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "VAGRANT_HOME": str(vagrant_home)}, check=False)


class VmHost:
    def __init__(self, vagrant_home: Path) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="wdvm-", dir="/var/tmp"))
        self.vagrant_home = vagrant_home
        self.closed = False
        self._runs = 0
        shutil.copytree("/etc/libvirt", self.top / "etc-libvirt", symlinks=True)
        shutil.copytree("/var/lib/libvirt", self.top / "lib", symlinks=True)
        for name in ("log", "cache"):
            (self.top / name).mkdir()
        (self.top / "log" / "qemu").mkdir()
        for autostart in (self.top / "etc-libvirt" / "qemu" / "networks" / "autostart").glob("*"):
            autostart.unlink()
        with open(self.top / "etc-libvirt" / "qemu.conf", "a") as conf:
            conf.write(QEMU_CONF)
        with open(self.top / "etc-libvirt" / "libvirtd.conf", "a") as conf:
            conf.write(LIBVIRTD_CONF)
        try:
            self._unshare, self.pid = start_host(["bash", str(INIT), str(self.top)], "VM host")
        except RuntimeError:
            self._remove_files()
            raise
        self.dotfiles = self.top / "dot-vagrant"

    # -- running things inside ---------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("WRAPDOCK_", "VAGRANT_"))}
        return {**clean, "VAGRANT_HOME": str(self.vagrant_home), "VAGRANT_DOTFILE_PATH": str(self.dotfiles),
                "VAGRANT_DEFAULT_PROVIDER": "libvirt", "VAGRANT_CHECKPOINT_DISABLE": "1",
                "LIBVIRT_DEFAULT_URI": "qemu:///system", "WRAPDOCK_BOX": BOX_NAME, **extra}

    def run(self, *argv: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """A command in the VM host, in the repository (Vagrant finds the Vagrantfile there).

        Its output also goes to a file as it comes, each line with the time it came (TOP/logs/NN-COMMAND.log:
        `tail -f` shows how far a slow `vagrant up` is, and where its minutes go); the file goes with the
        VM host, unless WRAPDOCK_VM_LOGS names a directory to keep the logs in.
        """
        self._runs += 1
        log = self.top / "logs" / f"{self._runs:02d}-{Path(argv[0]).name}-{argv[1] if len(argv) > 1 else ''}.log"
        log.parent.mkdir(exist_ok=True)
        lines: list[str] = []
        with open(log, "w") as out, open(log.with_suffix(".err"), "w+") as err:
            proc = subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", "-m", "-p", f"--wd={ROOT}", "--", *argv],
                                    stdout=subprocess.PIPE, stderr=err, text=True, env=env or self.env(),
                                    stdin=subprocess.DEVNULL)

            def copy() -> None:
                for line in proc.stdout:
                    lines.append(line)
                    out.write(f"{time.strftime('%H:%M:%S')} {line}")
                    out.flush()

            reader = threading.Thread(target=copy, daemon=True)
            reader.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            finally:
                reader.join(timeout=60)
            err.seek(0)
            return subprocess.CompletedProcess(argv, proc.returncode, "".join(lines), err.read())

    def vagrant(self, *args: str, hosts: int, timeout: float, **env: str) -> subprocess.CompletedProcess:
        return self.run("vagrant", *args, "--no-color", timeout=timeout,
                        env=self.env(WRAPDOCK_HOSTS=str(hosts), **env))

    def virsh(self, *args: str) -> list[str]:
        """Names virsh lists in the VM host (domains, volumes, networks), all of them."""
        done = self.run("virsh", "-q", *args, timeout=120)
        if done.returncode != 0:
            raise AssertionError(f"virsh {' '.join(args)} failed: {done.stderr}")
        return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]

    def leftovers(self) -> dict[str, list[str]]:
        """What Vagrant should have removed: domains, the VMs' volumes (the box's own stays), networks, QEMU."""
        volumes = [v for pool in self.virsh("pool-list", "--all", "--name")
                   for v in self.virsh("vol-list", pool) if not v.startswith(BOX_NAME.replace("/", "-VAGRANTSLASH-"))]
        qemu = self.run("pgrep", "-a", "qemu-system", timeout=60).stdout.split("\n")
        return {"domains": self.virsh("list", "--all", "--name"), "volumes": volumes,
                "networks": self.virsh("net-list", "--all", "--name"), "qemu": [q for q in qemu if q]}

    def log(self, name: str) -> str:
        """A log file of the VM host (libvirtd.log, qemu/<domain>.log), for failure messages."""
        path = self.top / "log" / name
        return path.read_text(errors="replace")[-4000:] if path.is_file() else f"(no {name})"

    # -- the end -------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        end_host(self._unshare, self.pid, 60)
        keep = os.environ.get("WRAPDOCK_VM_LOGS")
        if keep:
            shutil.copytree(self.top / "logs", Path(keep) / self.top.name, dirs_exist_ok=True)
            shutil.copytree(self.top / "log", Path(keep) / self.top.name / "libvirt", dirs_exist_ok=True)
        self._remove_files()

    def _remove_files(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)
