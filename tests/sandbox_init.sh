#!/bin/bash
# PID 1 of a throwaway "sandbox host": fresh net + mount + pid namespaces (see tests/sandbox.py).
# Makes /run, /sys and the cgroup mounts private to the sandbox, then waits to be killed.
set -eu
mount --make-rprivate /
if mountpoint -q /run/netns; then umount -l /run/netns; fi
mount -t tmpfs -o mode=755 wdsandbox-run /run
mount -t sysfs wdsandbox-sys /sys
ip link set lo up
echo ready
exec sleep infinity
