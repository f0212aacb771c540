#!/bin/bash
# In-guest (the debian-13 lane): the project's own set-up scripts and README's first commands on a
# Debian 13 machine, as a user runs them from a checkout: scripts/setup-host.sh (with dockerd
# stopped, so that it has to start it), scripts/serve.sh (pylog from PyPI into .venv, then `pylog
# serve`), README's first example, then README's test command on a subset: setup-host.sh
# --for-tests installs docker-compose v2 from Debian 13 (the image has the rest), and
# scripts/test.sh makes the test venv with Python 3.13 and runs tests/test_compose.py's
# `docker-compose config` tests of compose/, which must pass, not skip.
set -euo pipefail
share="$(cd "$(dirname "$0")" && pwd)"
export PIP_CERT="$share/ca.crt"  # pip in a guest needs the host's CA bundle
mkdir -p /root/checkout && tar -C /root/checkout -xf "$share/checkout.tar"
cd /root/checkout

echo "== bash scripts/setup-host.sh (docker.service and docker.socket stopped first)"
systemctl stop docker.service docker.socket
t=$(date +%s)
bash scripts/setup-host.sh
echo "   $(( $(date +%s) - t )) s"
systemctl is-active docker.service

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
# dockerd copies stdout and stderr in goroutines of their own, so two lines written microseconds
# apart can reach the driver in either order (json-file stores them so too): either is right,
# and --tail 1 must give the last of them.
order="$(echo $both)"
{ [ "$order" = "hello oops" ] || [ "$order" = "oops hello" ]; } && [ "$out" = hello ] \
  && [[ "$last" == *Z\ "${order##* }" ]] \
  || { echo "readme: docker logs did not show what README says"; exit 1; }
.venv/bin/pylog ps
docker rm hello >/dev/null
kill "$serve"; wait "$serve" || true

echo "== bash scripts/setup-host.sh --for-tests (what the tests use; docker-compose is not in the image)"
! command -v docker-compose >/dev/null || { echo "readme: the image already has docker-compose"; exit 1; }
t=$(date +%s)
bash scripts/setup-host.sh --for-tests
echo "   $(( $(date +%s) - t )) s"

echo "== bash scripts/test.sh tests/test_compose.py -k config (README's test command: venv, then pytest)"
t=$(date +%s)
set +e
bash scripts/test.sh tests/test_compose.py -k config -p no:cacheprovider 2>&1 | tee /tmp/test-sh.log
rc=${PIPESTATUS[0]}
set -e
echo "   $(( $(date +%s) - t )) s, exit $rc"
[ "$rc" = 0 ] || { echo "readme: scripts/test.sh failed"; exit 1; }
grep -q ' passed' /tmp/test-sh.log && ! grep -q '^SKIPPED' /tmp/test-sh.log \
  || { echo "readme: scripts/test.sh ran nothing or skipped tests"; exit 1; }
docker-compose version
echo "readme: setup-host.sh, serve.sh, the first example and test.sh work on $(. /etc/os-release; echo "$PRETTY_NAME")"
