#!/bin/bash
# PID 1 of a throwaway "VM host" (see tests/vm.py): fresh net + mount + pid namespaces in which libvirtd
# runs with its own /run, /sys, /dev, /etc/libvirt, /var/lib/libvirt, /var/log/libvirt and
# /var/cache/libvirt (copies under $1), so its bridges, dnsmasq, iptables rules and QEMU processes
# live and die with this namespace. Prints "ready" once libvirtd answers, then reaps orphans (QEMU
# daemonizes, so it becomes a child of PID 1) until it is killed.
set -eu
top=$1
mount --make-rprivate /
mount -t tmpfs -o mode=755 wdvm-run /run
# a fresh sysfs: /sys/class/net shows this namespace's links (libvirt sets bridge options there); it has
# no cgroup mounts, so libvirt runs QEMU without cgroups and never writes to the machine's cgroup tree
mount -t sysfs wdvm-sys /sys
mount --bind "$top/etc-libvirt" /etc/libvirt
mount --bind "$top/lib" /var/lib/libvirt
mount --bind "$top/log" /var/log/libvirt
mount --bind "$top/cache" /var/cache/libvirt
# a private /dev without kvm: where /dev/kvm exists but cannot run guests, libvirt would probe QEMU
# again (~8 s) on every domain definition; without it, libvirt offers software emulation only
mkdir -p "$top/dev"
mount --bind /dev "$top/dev"
mount -t tmpfs -o mode=755,size=1m wdvm-dev /dev
for node in null zero full random urandom tty; do
    touch "/dev/$node"
    mount --bind "$top/dev/$node" "/dev/$node"
done
mkdir -p /dev/net /dev/pts /dev/shm
touch /dev/net/tun
mount --bind "$top/dev/net/tun" /dev/net/tun
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 wdvm-devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 wdvm-shm /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s fd/0 /dev/stdin
ln -s fd/1 /dev/stdout
ln -s fd/2 /dev/stderr
umount "$top/dev"
ip link set lo up

/usr/sbin/libvirtd --daemon
deadline=$((SECONDS + 120))
until virsh --connect qemu:///system version >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "libvirtd did not answer within 120 s"
        exit 1
    fi
    sleep 0.2
done
echo ready
# bash reaps every child it has, adopted ones too, each time `sleep` returns
while :; do sleep 1; done
