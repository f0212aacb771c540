#!/usr/bin/env bash
# Run the benchmark, bench/run.py, against this host's dockerd: installs and starts what it needs
# first (dockerd, busybox-static for the test image, .venv with pylog, psutil and osmem-server).
# Arguments go to bench/run.py (none: the full run, B1 B2 B3 E1 x every driver x 3 rounds).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh --for-tests
bash scripts/venv.sh test
exec .venv/bin/python bench/run.py "$@"
