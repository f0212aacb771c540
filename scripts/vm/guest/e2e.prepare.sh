#!/usr/bin/env bash
# Host side of guest/e2e.sh: the working tree's tests/ and pyproject.toml (uncommitted work
# included), pylog's wheelhouse for the guest's Python and glibc (scripts/build-wheelhouse.sh),
# the test runner's wheels for the same target, and the list of test files to run, so the guest
# installs everything with no index at all.
# Usage: e2e.prepare.sh debian-12|debian-13 SHARE_DIR
#   PYLOG_VM_E2E_TESTS  the test files (default: the VM lanes' subset below)
#   PYLOG_VM_E2E_ARGS   extra pytest arguments (e.g. "-k kill_9")
set -euo pipefail
lane="$1" share="$2"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
case "$lane" in
  debian-12) py=3.11 glibc=2.36 ;;
  debian-13) py=3.13 glibc=2.41 ;;
  *) echo "e2e.prepare: unknown lane $lane" >&2; exit 2 ;;
esac
tests="${PYLOG_VM_E2E_TESTS:-tests/e2e/test_docker_logs.py tests/e2e/test_namespaces.py
  tests/e2e/test_restart.py tests/e2e/test_sink_fluentd.py tests/e2e/test_sink_syslog.py}"

cd "$repo"
# A wheelhouse of the lane's own (build/wheelhouse is the managed plugin's, kept by make).
mkdir -p build
(flock 9
 WHEELHOUSE="build/wheelhouse-$lane" PY_VERSION=$py GLIBC=$glibc bash scripts/build-wheelhouse.sh >&2
 cp -r "build/wheelhouse-$lane" "$share/wheelhouse") 9>build/.wheelhouse.lock

# The test extra's packages that the e2e tests import; grpcio-tools (scripts/gen-proto.sh),
# ruff, mccabe (tests/test_shape.py) and osmem-server (not imported by tests/e2e) stay out.
python3 - >"$share/wheelhouse/test-requirements.txt" <<'PY'
import re, tomllib
with open("pyproject.toml", "rb") as f:
    test = tomllib.load(f)["project"]["optional-dependencies"]["test"]
skip = {"grpcio-tools", "osmem-server", "ruff", "mccabe"}
print("\n".join(r for r in test if re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] not in skip))
PY
platforms=()
for ((v = ${glibc#2.}; v >= 17; v--)); do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
build/tools-venv/bin/python -m pip --disable-pip-version-check -q download --only-binary=:all: \
  "${platforms[@]}" --python-version "$py" --implementation cp --abi "cp${py/./}" --abi abi3 \
  --abi none -d "$share/wheelhouse/test" -r "$share/wheelhouse/test-requirements.txt" >&2

mkdir -p "$share/src"
cp pyproject.toml "$share/src/"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - tests | tar -C "$share/src" -xf -
printf '%s\n' $tests >"$share/e2e-tests"
printf '%s\n' "${PYLOG_VM_E2E_ARGS:-}" >"$share/e2e-args"
echo "e2e.prepare: $(ls "$share/wheelhouse/test" | wc -l) test wheels for cp${py/./};" \
     "tests: $(tr '\n' ' ' <"$share/e2e-tests")" >&2
