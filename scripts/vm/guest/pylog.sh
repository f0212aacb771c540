#!/bin/bash
# In-guest: the smoke checks, then pylog installed as a user would (venv from a wheelhouse, a systemd
# service) and a container logging through it, read back with docker logs.
set -euo pipefail
share="$(cd "$(dirname "$0")" && pwd)"
bash "$share/smoke.sh"

echo "== pip install pylog into /opt/pylog (--no-index, the share's wheelhouse)"
python3 --version
python3 -m venv /opt/pylog
/opt/pylog/bin/pip install -q --disable-pip-version-check --no-index \
  --find-links "$share/wheelhouse/deps" --find-links "$share/wheelhouse/pylog" pylog
/opt/pylog/bin/pip list --disable-pip-version-check --format=freeze
echo "== pylog --help"
/opt/pylog/bin/pylog --help

echo "== systemctl start pylog.service"
install -m 644 "$share/pylog.service" /etc/systemd/system/pylog.service
systemctl daemon-reload
systemctl enable --now pylog.service
for _ in $(seq 120); do [ -S /run/docker/plugins/pylog.sock ] && break; sleep 0.5; done
systemctl is-active pylog.service
ls -l /run/docker/plugins/pylog.sock

echo "== docker run --log-driver=pylog"
docker run --log-driver=pylog --name hello lane/busybox sh -c 'echo hello; echo oops >&2'
echo "== docker logs hello";                docker logs hello
echo "== docker logs hello 2>/dev/null";    docker logs hello 2>/dev/null
echo "== docker logs --tail 1 -t hello";    docker logs --tail 1 -t hello
echo "== docker inspect (log config)";      docker inspect -f '{{.HostConfig.LogConfig.Type}}' hello
echo "== pylog ps";                         /opt/pylog/bin/pylog ps
docker rm hello >/dev/null
echo "== pylog's own log (journal)"
journalctl -u pylog.service --no-pager | tail -n 15
