#!/usr/bin/env bash
# Make sure this Debian host has a running Docker engine (docker.io) and what pylog's install
# builds with (gcc, python3-dev), and with --for-tests also
# what the test suite uses (busybox-static for test images, rsyslog as a syslog peer; make,
# debootstrap and docker-registry for the managed plugin).
# Idempotent: installs only what is missing, starts dockerd only if it is not answering.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

packages=()
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
# pylog's one compiled module (parse=json for fluentd, setup.py) is built by scripts/venv.sh
command -v gcc >/dev/null 2>&1 || packages+=(gcc)
dpkg -s python3-dev >/dev/null 2>&1 || packages+=(python3-dev)
if [ "${1:-}" = "--for-tests" ]; then
  dpkg -s busybox-static >/dev/null 2>&1 || packages+=(busybox-static)
  command -v rsyslogd >/dev/null 2>&1 || packages+=(rsyslog)
  dpkg -s rsyslog-gnutls >/dev/null 2>&1 || packages+=(rsyslog-gnutls)  # TLS for the syslog tests
  command -v openssl >/dev/null 2>&1 || packages+=(openssl)  # the tests make their own CA
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
  # tests/test_compose.py: `docker-compose config` checks compose/, curl runs its setup script
  command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
  command -v curl >/dev/null 2>&1 || packages+=(curl)
  # `make plugin` (the managed-plugin tests): its base image is made with debootstrap, and the
  # upgrade test pushes to a local registry (installing it starts no service).
  command -v make >/dev/null 2>&1 || packages+=(make)
  dpkg -s debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
  dpkg -s docker-registry >/dev/null 2>&1 || packages+=(docker-registry)
  command -v chromium >/dev/null 2>&1 || packages+=(chromium)  # the namespace map's browser test
fi
if [ "${#packages[@]}" -gt 0 ]; then
  echo "setup-host: installing ${packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi

if ! $SUDO docker version >/dev/null 2>&1; then
  # Booted with systemd (sd_booted's test; is-system-running says "degraded" on many real
  # hosts): docker's own service, never a second dockerd beside it.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    echo "setup-host: systemctl start docker"
    $SUDO systemctl start docker || { $SUDO journalctl -u docker -n 30 --no-pager >&2; exit 1; }
  else
    echo "setup-host: starting dockerd (log: /var/log/dockerd.log)"
    $SUDO sh -c 'nohup dockerd >>/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 120); do
    $SUDO docker version >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! $SUDO docker version >/dev/null 2>&1; then
    echo "setup-host: dockerd did not come up; the end of its log:" >&2
    $SUDO tail -n 30 /var/log/dockerd.log >&2 || true
    exit 1
  fi
fi
echo "setup-host: dockerd $($SUDO docker version --format '{{.Server.Version}}') is running"
