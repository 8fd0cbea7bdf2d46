"""The Vagrantfile's machines, addresses and provisioning, read without Vagrant or a VM.

Ruby loads the real Vagrantfile against a recorder standing in for `Vagrant.configure` (it records every
setting and `define`), so the hosts' names and fixed addresses are checked for any WRAPDOCK_HOSTS in
well under a second; tests/unit/test_lab.py runs the real `vagrant validate -p` too.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VIRTUALBOX_HOST_ONLY = ipaddress.ip_network("192.168.56.0/21")

RECORDER = r"""
require "json"

# Records settings (`x.y = v`), calls (`x.network(...)`) and blocks (`x.provider "libvirt" do |lv|`).
class Recorder
  attr_reader :settings, :calls

  def initialize
    @settings = {}
    @calls = []
  end

  def method_missing(name, *args, **options, &block)
    key = name.to_s
    if key.end_with?("=")
      @settings[key.chomp("=")] = args.first
    elsif args.empty? && options.empty? && block.nil?
      @settings.key?(key) ? @settings[key] : (@settings[key] = Recorder.new)
    else
      child = Recorder.new
      @calls << { "call" => key, "args" => args, "options" => options, "block" => child }
      block&.call(child)
      nil
    end
  end

  def respond_to_missing?(*) = true

  def to_json(*args) = { "settings" => @settings, "calls" => @calls }.to_json(*args)
end

module Vagrant
  def self.configure(_version)
    config = Recorder.new
    yield config
    puts JSON.generate(config)
  end
end

load ARGV.fetch(0)
"""


def load(**env: str) -> dict:
    """The Vagrantfile as the recorder saw it, with these WRAPDOCK_* variables."""
    done = run_vagrantfile(**env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_vagrantfile(**env: str) -> subprocess.CompletedProcess:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (scripts/setup --tests installs vagrant, which brings it)")
    clean = {key: value for key, value in os.environ.items() if not key.startswith("WRAPDOCK_")}
    return subprocess.run(["ruby", "-e", RECORDER, str(ROOT / "Vagrantfile")], capture_output=True, text=True,
                          env={**clean, **env}, timeout=60, check=False)


def machines(config: dict) -> list[dict]:
    """Each `config.vm.define`: its name, hostname, private networks and the provisioner's options."""
    found = []
    for call in config["settings"]["vm"]["calls"]:
        if call["call"] != "define":
            continue
        node = call["block"]["settings"]["vm"]
        networks = [c for c in node["calls"] if c["call"] == "network"]
        provisions = [c for c in node["calls"] if c["call"] == "provision"]
        assert len(provisions) == 1
        found.append({"name": call["args"][0], "primary": call["options"].get("primary"),
                      "hostname": provisions[0]["options"]["env"]["LAB_HOSTNAME"],
                      "ips": [n["options"]["ip"] for n in networks if n["args"] == ["private_network"]],
                      # provisioning configures the private address itself
                      "auto_config": {n["options"]["auto_config"] for n in networks},
                      "env": provisions[0]["options"]["env"]})
    return found


def provider(config: dict, name: str) -> dict:
    for call in config["settings"]["vm"]["calls"]:
        if call["call"] == "provider" and call["args"] == [name]:
            return call["block"]["settings"]
    raise AssertionError(f"no provider {name}")


def test_one_vm_by_default_without_a_private_network() -> None:
    config = load()
    assert config["settings"]["vm"]["settings"]["box"] == "debian/bookworm64"
    (only,) = machines(config)
    assert only["name"] == "lab1" and only["primary"] is True
    assert only["hostname"] == "wrapdock-lab"
    assert only["ips"] == []
    assert only["env"]["OWN_IP"] == "" and only["env"]["PEERS"] == ""
    assert only["env"]["LAB_OFFLINE"] == "0"
    assert only["env"]["SEED_LAB"] == "1"
    assert only["env"]["OVERLAY_IP"] == "" and only["env"]["CLUSTER_IP"] == ""
    # no etcd: a single VM has no overlay
    assert only["env"]["ETCD_HOST"] == "0"


@pytest.mark.parametrize("count", [2, 3, 20])
def test_n_hosts_get_fixed_distinct_addresses_on_the_private_network(count: int) -> None:
    found = machines(load(WRAPDOCK_HOSTS=str(count)))
    assert [m["name"] for m in found] == [f"lab{i}" for i in range(1, count + 1)]
    assert [m["primary"] for m in found] == [True] + [False] * (count - 1)
    addresses = [ipaddress.ip_address(ip) for m in found for ip in m["ips"]]
    assert len(addresses) == count
    assert all(m["auto_config"] == {False} for m in found)
    assert addresses == [ipaddress.ip_address("192.168.56.11") + i for i in range(count)]
    assert len(set(addresses)) == count
    for address in addresses:
        assert address in VIRTUALBOX_HOST_ONLY
        # not the network, the broadcast address, nor .1 (the host's side of a host-only network)
        assert address not in {VIRTUALBOX_HOST_ONLY[0], VIRTUALBOX_HOST_ONLY[1], VIRTUALBOX_HOST_ONLY.broadcast_address}
        assert ipaddress.ip_network(f"{address}/24", strict=False) == ipaddress.ip_network("192.168.56.0/24")
    overlay = ipaddress.ip_network("10.210.0.0/16")
    cluster = ipaddress.ip_network("10.211.0.0/16")
    assert not overlay.overlaps(cluster)
    for index, machine in enumerate(found):
        assert machine["hostname"] == f"wrapdock-lab{index + 1}"
        env = machine["env"]
        assert env["OWN_IP"] == machine["ips"][0]
        assert (env["OVERLAY"], env["OVERLAY_SUBNET"], env["OVERLAY_VNI"]) == ("both", str(overlay), "42")
        # the cluster overlay beside it: etcd on lab1's private address, only there; another subnet and VNI
        assert env["CLUSTER_URL"] == "etcd://192.168.56.11:2379"
        assert env["ETCD_HOST"] == ("1" if index == 0 else "0")
        assert (env["CLUSTER_SUBNET"], env["CLUSTER_VNI"]) == (str(cluster), "43")
        # its container's overlay address: in this VM's range, the /24 numbered by the last octet of its
        # VTEP address (the vxlan driver's rule), not the range's gateway (.1)
        container = ipaddress.ip_address(env["OVERLAY_IP"])
        octet = int(machine["ips"][0].rsplit(".", 1)[1])
        assert container in overlay and container in ipaddress.ip_network(f"10.210.{octet}.0/24")
        assert container.packed[3] == 2
        # the cluster network's container: the same rule in the cluster subnet (the range wrapdock claims
        # in etcd for this VTEP address when it is free)
        assert ipaddress.ip_address(env["CLUSTER_IP"]) == ipaddress.ip_address(f"10.211.{octet}.2")
        # each VM pings those before it (VirtualBox brings them up one after another), over the private
        # network and from its container to theirs; its overlay peers are all the others
        assert env["PEERS"].split() == [f"{m['name']}={m['ips'][0]}={m['env']['OVERLAY_IP']}={m['env']['CLUSTER_IP']}"
                                        for m in found[:index]]
        assert env["OVERLAY_PEERS"].split() == [m["ips"][0] for m in found if m is not machine]
    assert len({m["env"]["OVERLAY_IP"] for m in found}) == count
    assert len({m["env"]["CLUSTER_IP"] for m in found}) == count


@pytest.mark.parametrize(("mode", "etcd"), [("both", ["1", "0", "0"]), ("cluster", ["1", "0", "0"]),
                                            ("static", ["0", "0", "0"])])
def test_overlay_mode_decides_whether_lab1_runs_etcd(mode: str, etcd: list[str]) -> None:
    found = machines(load(WRAPDOCK_HOSTS="3", WRAPDOCK_OVERLAY=mode))
    assert [m["env"]["OVERLAY"] for m in found] == [mode] * 3
    assert [m["env"]["ETCD_HOST"] for m in found] == etcd


def test_the_provisioning_script_is_valid_bash() -> None:
    config = load(WRAPDOCK_HOSTS="2")
    for call in config["settings"]["vm"]["calls"]:
        if call["call"] != "define":
            continue
        (provision,) = [c for c in call["block"]["settings"]["vm"]["calls"] if c["call"] == "provision"]
        done = subprocess.run(["bash", "-n"], input=provision["options"]["inline"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("value", ["0", "21", "-1", "two", "2.5", "1e1"])
def test_bad_host_counts_are_refused_in_one_line(value: str) -> None:
    done = run_vagrantfile(WRAPDOCK_HOSTS=value)
    assert done.returncode == 1
    assert done.stderr == f'wrapdock: WRAPDOCK_HOSTS must be a whole number from 1 to 20 (got "{value}")\n'


def test_empty_host_count_means_one() -> None:
    assert len(machines(load(WRAPDOCK_HOSTS=" "))) == 1


def test_local_box_is_offline_with_the_wheelhouse_and_software_emulation() -> None:
    config = load(WRAPDOCK_BOX="wrapdock/bookworm", WRAPDOCK_HOSTS="2", WRAPDOCK_LIBVIRT_DRIVER="qemu")
    vm = config["settings"]["vm"]["settings"]
    assert vm["box"] == "wrapdock/bookworm"
    assert vm["box_check_update"] is False
    assert vm["guest"] == "debian"
    assert config["settings"]["ssh"]["settings"]["insert_key"] is False
    for machine in machines(config):
        assert machine["env"]["LAB_OFFLINE"] == "1"
    libvirt = provider(config, "libvirt")
    assert libvirt["driver"] == "qemu"
    assert (libvirt["cpu_mode"], libvirt["cpu_model"]) == ("custom", "qemu64")
    assert (libvirt["memory"], libvirt["cpus"]) == (1024, 1)


def test_kvm_keeps_the_host_cpu_model() -> None:
    libvirt = provider(load(WRAPDOCK_LIBVIRT_DRIVER="kvm"), "libvirt")
    assert libvirt["driver"] == "kvm"
    assert "cpu_mode" not in libvirt
    assert (libvirt["memory"], libvirt["cpus"]) == (2048, 2)


def test_bad_driver_is_refused() -> None:
    done = run_vagrantfile(WRAPDOCK_LIBVIRT_DRIVER="xen")
    assert done.returncode == 1
    assert done.stderr == 'wrapdock: WRAPDOCK_LIBVIRT_DRIVER must be kvm or qemu (got "xen")\n'


def test_synced_folder_leaves_the_hosts_virtualenv_and_git_behind() -> None:
    config = load()
    (synced,) = [c for c in config["settings"]["vm"]["calls"] if c["call"] == "synced_folder"]
    assert synced["args"] == [".", "/vagrant"]
    assert synced["options"]["type"] == "rsync"
    assert {".git/", ".venv/", ".vagrant/", ".wheelhouse/"} <= set(synced["options"]["rsync__exclude"])
    # no -z: compressing costs more than it saves where the VM's CPU is emulated
    assert synced["options"]["rsync__args"] == ["--archive", "--delete", "--copy-links"]
    assert synced["options"]["rsync__chown"] is False


@pytest.mark.parametrize(("value", "seed"), [("1", "1"), ("0", "0")])
def test_several_vms_run_the_seed_lab_unless_told_not_to(value: str, seed: str) -> None:
    assert {m["env"]["SEED_LAB"] for m in machines(load(WRAPDOCK_HOSTS="2", WRAPDOCK_SEED_LAB=value))} == {seed}
    # one VM always runs it: it is all that VM does
    assert machines(load(WRAPDOCK_SEED_LAB="0"))[0]["env"]["SEED_LAB"] == "1"


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("WRAPDOCK_SEED_LAB", "yes", 'wrapdock: WRAPDOCK_SEED_LAB must be 0 or 1 (got "yes")\n'),
    ("WRAPDOCK_OVERLAY", "etcd", 'wrapdock: WRAPDOCK_OVERLAY must be both, static or cluster (got "etcd")\n'),
])
def test_bad_lab_settings_are_refused_in_one_line(variable: str, value: str, message: str) -> None:
    done = run_vagrantfile(**{variable: value})
    assert done.returncode == 1
    assert done.stderr == message
