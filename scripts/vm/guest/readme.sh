#!/bin/bash
# In-guest (the debian-13 lane): the project's own set-up scripts and README's first commands on a
# Debian 13 machine, as a user runs them from a checkout: scripts/setup-host.sh, scripts/serve.sh
# (pylog from PyPI into .venv, then `pylog serve`), then README's first example.
set -euo pipefail
share="$(cd "$(dirname "$0")" && pwd)"
export PIP_CERT="$share/ca.crt"  # pip in a guest needs the host's CA bundle
mkdir -p /root/checkout && tar -C /root/checkout -xf "$share/checkout.tar"
cd /root/checkout

echo "== bash scripts/setup-host.sh"
t=$(date +%s)
bash scripts/setup-host.sh
echo "   $(( $(date +%s) - t )) s"

echo "== bash scripts/serve.sh (in the background, as README's first command)"
t=$(date +%s)
bash scripts/serve.sh >/tmp/serve.log 2>&1 &
serve=$!
for _ in $(seq 1200); do
  [ -S /run/docker/plugins/pylog.sock ] && .venv/bin/pylog ps >/dev/null 2>&1 && break
  kill -0 "$serve" 2>/dev/null || { echo "serve.sh exited:"; tail -n 30 /tmp/serve.log; exit 1; }
  sleep 0.5
done
echo "   serving after $(( $(date +%s) - t )) s"

echo "== README's first example (lane/busybox: no registry here)"
docker run --log-driver=pylog --name hello lane/busybox sh -c 'echo hello; echo oops >&2'
both="$(docker logs hello 2>&1)"
out="$(docker logs hello 2>/dev/null)"
last="$(docker logs --tail 1 -t hello 2>&1)"
printf 'docker logs hello: %s\ndocker logs hello 2>/dev/null: %s\ndocker logs --tail 1 -t hello: %s\n' \
  "$(echo $both)" "$out" "$last"
[ "$(echo $both)" = "hello oops" ] && [ "$out" = hello ] && [[ "$last" == *Z\ oops ]] \
  || { echo "readme: docker logs did not show what README says"; exit 1; }
.venv/bin/pylog ps
docker rm hello >/dev/null
kill "$serve"; wait "$serve" || true
echo "readme: setup-host.sh, serve.sh and the first example work on $(. /etc/os-release; echo "$PRETTY_NAME")"
