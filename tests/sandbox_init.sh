#!/bin/bash
# PID 1 of a throwaway "sandbox host": fresh net + mount + pid namespaces (see tests/sandbox.py).
# Makes /run, /sys and the cgroup mounts private to the sandbox, then waits to be killed.
set -eu
mount --make-rprivate /
if mountpoint -q /run/netns; then umount -l /run/netns; fi
mount -t tmpfs -o mode=755 wdsandbox-run /run
# a fresh sysfs shows the sandbox's own links in /sys/class/net; it hides /sys/fs/cgroup, so the
# machine's cgroup mounts are carried over (cgroups are not namespaced by mounts: tests use their
# own parent cgroup and remove it)
mkdir -p /run/.wdsandbox-cgroup
mount --rbind /sys/fs/cgroup /run/.wdsandbox-cgroup
mount -t sysfs wdsandbox-sys /sys
mount --move /run/.wdsandbox-cgroup /sys/fs/cgroup
rmdir /run/.wdsandbox-cgroup
ip link set lo up
echo ready
exec sleep infinity
