#!/usr/bin/env bash
# Host side of guest/pylog.sh: a wheelhouse for the guest's Python and glibc (pylog's wheel and its
# dependencies, binary only) and the guest-side files, so the guest installs with no index at all.
# Usage: pylog.prepare.sh debian-12|debian-13 SHARE_DIR
set -euo pipefail
lane="$1" share="$2"
here="$(cd "$(dirname "$0")" && pwd)"
case "$lane" in
  debian-12) py=3.11 glibc=2.36 ;;
  debian-13) py=3.13 glibc=2.41 ;;
esac
(cd "$here/../../.." && WHEELHOUSE="build/wheelhouse-$lane" PY_VERSION=$py GLIBC=$glibc \
   bash scripts/build-wheelhouse.sh >&2 && cp -r "build/wheelhouse-$lane" "$share/wheelhouse")
cp "$here/smoke.sh" "$here/pylog.service" "$share/"
