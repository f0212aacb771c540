#!/usr/bin/env bash
# Create .venv (once) and install pylog into it, with an extra when asked: venv.sh [test|dev]
# (test: what the tests need; dev: that and mypy, for .ci/run's lint step and contributors)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
case "${1:-}" in
  test|dev) extras="[$1]" ;;
  "") ;;
  *) echo "usage: $0 [test|dev]" >&2; exit 2 ;;
esac
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
