#!/usr/bin/env bash
# Run pylog in the foreground with its embedded default: the local store only, so `docker logs`
# works with no other service. dockerd finds it as the log driver "pylog".
# Extra arguments go to `pylog serve` (see `pylog serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/venv.sh
exec .venv/bin/pylog serve "$@"
