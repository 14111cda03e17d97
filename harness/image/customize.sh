#!/bin/sh
# Runs inside the fresh root file system (chroot) of a base image.
set -eu

# No kernel modules to load in a container; a failed unit would leave the
# system "degraded" and hide real failures.
systemctl mask systemd-modules-load.service systemd-udevd.service \
  systemd-udevd-control.socket systemd-udevd-kernel.socket \
  getty@tty1.service console-getty.service >/dev/null 2>&1 || true

# Keep downloaded packages: the warm cache below must survive installs.
rm -f /etc/apt/apt.conf.d/docker-clean
echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' \
  > /etc/apt/apt.conf.d/10keep-packages

apt-get update -q
if [ -s /tmp/warm-cache.txt ]; then
  # shellcheck disable=SC2046
  DEBIAN_FRONTEND=noninteractive apt-get install -q -y --download-only \
    $(grep -v '^#' /tmp/warm-cache.txt)
fi
rm -f /tmp/warm-cache.txt
echo "localhost" > /etc/hostname
