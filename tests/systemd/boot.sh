#!/bin/bash
# PID 1 of fresh pid/mount/uts/ipc/cgroup/net namespaces (started by tests/src/systemd.rs
# through `script` and `unshare`): gives systemd a private view that cannot change the
# host, then execs it as PID 1.
# Usage: boot.sh HOSTNAME [NETNS...]   NETNS: names under /run/netns the units may join.
set -eu
host=$1
shift
# Hold the test's network namespaces by fd, then drop this mount namespace's copies of every
# nsfs mount: they would keep other tests' deleted namespaces alive until poweroff.
fd=3
for ns in "$@"; do
  eval "exec $fd</run/netns/$ns"
  fd=$((fd + 1))
done
findmnt -rn -t nsfs -o TARGET | while read -r m; do umount -l "$m"; done
# /proc/sys and /sys read-only, per mount (never remount a superblock): systemd must not
# bump host-wide sysctls. /proc/sys/net stays writable: it acts on the writer's network
# namespace (PID 1 has its own), and the agent sets arp_ignore in its namespace there.
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
mount --bind /proc/sys/net /proc/sys/net && mount -o remount,bind,rw /proc/sys/net
mount --bind /sys /sys && mount -o remount,bind,ro /sys   # drops the host's cgroup and bpf submounts
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup     # rooted at our cgroup namespace
mount -t bpf bpf /sys/fs/bpf                              # a private bpffs instance for pins
# Private /run (the host's may hold a stale /run/systemd); the held namespaces go in it.
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/systemd/system /run/netns
fd=3
for ns in "$@"; do
  touch "/run/netns/$ns"
  nsenter --net="/proc/$$/fd/$fd" mount --bind /proc/self/ns/net "/run/netns/$ns"
  eval "exec $fd<&-"
  fd=$((fd + 1))
done
# The host's enablement links and overrides must not apply: its
# network-online.target.wants (which carp-agent.service pulls in) may run `ifup -a`.
mount -t tmpfs -o mode=755 tmpfs /etc/systemd/system
printf '[Unit]\nDescription=Boot target: nothing else started\nDefaultDependencies=no\n' \
  >/run/systemd/system/carpt-boot.target
# A unit with default dependencies pulls in sysinit.target, whose wants act on the host's
# files and kernel (systemd-tmpfiles-setup would empty the host's /tmp: `D /tmp`). Mask
# every unit the distribution's *.wants/*.requires name, and every generator (fstab
# mounts, SysV scripts): the targets are reached with nothing in them.
mkdir -p /run/systemd/system-generators
for d in /lib /usr/lib /usr/local/lib; do
  for g in "$d"/systemd/system-generators/*; do
    [ -e "$g" ] && ln -sf /dev/null "/run/systemd/system-generators/${g##*/}"
  done
  for u in "$d"/systemd/system/*.wants/* "$d"/systemd/system/*.requires/*; do
    [ -e "$u" ] || [ -L "$u" ] && ln -sf /dev/null "/run/systemd/system/${u##*/}"
  done
done
# Container-mode PID 1 logs to /dev/console, which must be a tty: our `script` pty.
if tty -s; then mount --bind "$(tty)" /dev/console; else mount --bind /dev/null /dev/console; fi
# Safety belt: systemd-shutdown must never run (outside container mode it unmounts and
# remounts filesystems read-only). The drop-in keeps umount.target from undoing the bind.
mount --bind /bin/true /lib/systemd/systemd-shutdown
d='/run/systemd/system/usr-lib-systemd-systemd\x2dshutdown.mount.d'
mkdir -p "$d" && printf '[Unit]\nDefaultDependencies=no\n' >"$d/keep.conf"
hostname "$host"   # private UTS namespace: systemd would otherwise set the host's name
exec env -i container=carp-tests PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=carpt-boot.target --log-target=console \
  --log-level=info --show-status=no \
  --default-standard-output=inherit --default-standard-error=inherit
