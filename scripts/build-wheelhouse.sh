#!/usr/bin/env bash
# The wheelhouse the plugin's Dockerfile installs from, built on the host so that `docker build`
# needs no network:
#
#   build/wheelhouse/deps/   pylog's dependencies as binary wheels for the plugin's Python and
#                            glibc (cp$PY_VERSION, manylinux up to glibc $GLIBC), never this
#                            host's own build; plus requirements.txt (pylog's dependencies)
#   build/wheelhouse/pylog/  pylog's own wheel: Python, and its compiled module for CPython 3.11 and
#                            later (abi3), which must build here (gcc, python3-dev)
#   build/wheelhouse/tools/  pip's wheel, which the build runs without installing it
#
#   WHEELHOUSE=DIR  builds into DIR instead (the VM lanes: build/wheelhouse is make's, for the
#                   plugin's own Python, and must not change under it)
#
#   scripts/build-wheelhouse.sh        (PY_VERSION=3.11 GLIBC=2.36 by default: Debian bookworm,
#                                       which both python:3.11-slim-bookworm and the local
#                                       debootstrap base are)
set -euo pipefail
cd "$(dirname "$0")/.."

py_version="${PY_VERSION:-3.11}"
glibc="${GLIBC:-2.36}"
arch="$(uname -m)"
out="${WHEELHOUSE:-build/wheelhouse}"  # the VM lanes build theirs elsewhere: this one is the plugin's
tools_venv="build/tools-venv"

# pip from a venv of our own (the host's python3 may have no pip, or an old one).
if [ ! -x "$tools_venv/bin/pip" ]; then
  python3 -m venv "$tools_venv"
fi
pip=("$tools_venv/bin/python" -m pip --disable-pip-version-check -q)

rm -rf "$out.tmp"
mkdir -p "$out.tmp/deps" "$out.tmp/pylog" "$out.tmp/tools"

# pylog's dependencies, as pyproject.toml states them.
python3 - >"$out.tmp/deps/requirements.txt" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY

# Binary wheels only, chosen for the target rather than for this host: every manylinux tag the
# target's glibc accepts (pip does not expand manylinux_2_X to older tags by itself).
platforms=()
minor="${glibc#2.}"
for ((v = minor; v >= 17; v--)); do platforms+=(--platform "manylinux_2_${v}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}" --platform "manylinux2010_${arch}"
            --platform "manylinux1_${arch}")
target=(--only-binary=:all: "${platforms[@]}" --python-version "$py_version"
        --implementation cp --abi "cp${py_version/./}" --abi abi3 --abi none)

"${pip[@]}" download "${target[@]}" -d "$out.tmp/deps" -r "$out.tmp/deps/requirements.txt"
"${pip[@]}" download "${target[@]}" -d "$out.tmp/tools" pip

# pylog itself; a fixed SOURCE_DATE_EPOCH makes the same sources give the same wheel, so that
# Docker's build cache keeps the layer when nothing changed.
SOURCE_DATE_EPOCH=315532800 PYLOG_REQUIRE_EXT=1 "${pip[@]}" wheel --no-deps -w "$out.tmp/pylog" .

rm -rf "$out"
mv "$out.tmp" "$out"
echo "build-wheelhouse: $(ls "$out/deps" | grep -c '\.whl$') dependency wheels for" \
     "cp${py_version/./} manylinux (glibc <= $glibc, $arch) in $out"
