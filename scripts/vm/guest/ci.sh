#!/bin/bash
# In-guest, what CI runs in each lane: pylog as a systemd service (pylog.sh), then the lane's e2e
# subset (e2e.sh) with the managed plugin the host built, then the lane's facts (facts.py) for
# README's "tested on" table. Exits with pytest's code (or 1 if the service check failed).
set -uo pipefail
share="$(cd "$(dirname "$0")" && pwd)"
bash "$share/pylog.sh" || { echo "ci: pylog.sh (the systemd service) failed"; exit 1; }
systemctl disable --now pylog.service  # the e2e tests start their own `pylog serve`s
if [ -f "$share/checkout.tar" ]; then  # the debian-13 lane: the project's scripts on Debian 13
  bash "$share/readme.sh" || { echo "ci: readme.sh (setup-host.sh, serve.sh) failed"; exit 1; }
fi

# `docker plugin create` reads a directory: the host's build, unpacked off the slow 9p share.
t=$(date +%s)
mkdir -p /root/plugin && tar -C /root/plugin -xf "$share/plugin.tar"
echo "== plugin directory copied in $(( $(date +%s) - t )) s ($(du -sh /root/plugin | cut -f1))"
export PYLOG_E2E_PLUGIN_DIR=/root/plugin

bash "$share/e2e.sh"
rc=$?
python3 "$share/facts.py" "$share/out/junit.xml" >"$share/out/facts.json" \
  && cat "$share/out/facts.json"
exit $rc
