#!/usr/bin/env bash
# Run the whole test suite: unit tests and the end-to-end tests against a real dockerd.
# Installs and starts what the tests need first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh --for-tests
bash scripts/venv.sh test
export PYLOG_REQUIRE_DOCKER="${PYLOG_REQUIRE_DOCKER:-1}"
exec .venv/bin/python -m pytest tests -ra "$@"
