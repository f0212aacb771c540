#!/usr/bin/env bash
# Build pylog's managed-plugin rootfs from the wheelhouse and (re)create the plugin in dockerd.
# Run through `make plugin` (which builds the wheelhouse and the base first); settings come from
# the environment:
#
#   PLUGIN_NAME  the plugin's name, i.e. the --log-driver            (default pylog)
#   BASE_IMAGE   the Dockerfile's base                               (default pylog-base:bookworm)
#   BUILD_DIR    where <dir>/config.json and <dir>/rootfs are made   (default build/plugin/NAME)
#   ENABLE       1: enable it (with --timeout 0) once created; 0: leave it disabled (default 1)
#   FORCE        1: replace the existing plugin even if dockerd says it is in use (default 0)
#
# An existing plugin of that name is replaced: disabled, removed (with its stored logs), created
# again. If a container still uses it, `docker plugin disable` refuses and so does this script;
# FORCE=1 goes on (those containers' output is then read by nobody until they are restarted).
set -euo pipefail
cd "$(dirname "$0")/.."

name="${PLUGIN_NAME:-pylog}"
base="${BASE_IMAGE:-pylog-base:bookworm}"
slug="$(printf '%s' "$name" | tr -c 'a-zA-Z0-9_.-' '-')"
build_dir="${BUILD_DIR:-build/plugin/$slug}"
image="pylog-plugin-rootfs:$slug"
enable="${ENABLE:-1}"
force="${FORCE:-0}"
start=$SECONDS

say() { echo "build-plugin: $*"; }
die() { echo "build-plugin: $*" >&2; exit 1; }

# A legacy `pylog serve` listening on /run/docker/plugins/NAME.sock claims the same driver name.
# dockerd prefers the managed plugin while it is enabled, but the two would keep separate stores
# and `docker logs` would depend on which one is enabled: refuse rather than guess.
legacy="/run/docker/plugins/$name.sock"
if [ -S "$legacy" ] && python3 - "$legacy" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError:
    sys.exit(1)
PY
then
  die "a legacy plugin (e.g. \`pylog serve\`) is serving $legacy under the same name '$name'." \
      "Stop it first (its logs stay in its own --state-dir), or build under another name:" \
      "make plugin PLUGIN_NAME=..."
fi

[ -d build/wheelhouse/deps ] || die "no wheelhouse: run \`make plugin\` (or scripts/build-wheelhouse.sh)"

say "docker build (BASE_IMAGE=$base) -> $image"
docker build -q --build-arg "BASE_IMAGE=$base" -t "$image" -f Dockerfile . >/dev/null
size="$(docker image inspect -f '{{.Size}}' "$image")"

say "rootfs -> $build_dir/rootfs"
rm -rf --one-file-system "$build_dir"
mkdir -p "$build_dir/rootfs"
cid="$(docker create "$image")"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
docker export "$cid" | tar -x --numeric-owner -C "$build_dir/rootfs"
docker rm "$cid" >/dev/null
trap - EXIT
cp config.json "$build_dir/config.json"

if docker plugin inspect "$name" >/dev/null 2>&1; then
  say "replacing the existing plugin $name (its stored logs go with it)"
  if [ "$(docker plugin inspect -f '{{.Enabled}}' "$name")" = true ]; then
    if [ "$force" = 1 ]; then
      docker plugin disable -f "$name" >/dev/null
    else
      # dockerd lets go of a container a moment after it stops: a few tries, then give up.
      for try in 1 2 3 4 5 6 7 8 9 10; do
        docker plugin disable "$name" >/dev/null 2>&1 && break
        [ "$try" = 10 ] && die "cannot disable $name: dockerd says it is in use. Stop or" \
          "remove the containers that use it, or replace it anyway with FORCE=1"
        sleep 0.5
      done
    fi
  fi
  docker plugin rm -f "$name" >/dev/null
fi
say "docker plugin create $name $build_dir"
docker plugin create "$name" "$build_dir" >/dev/null
if [ "$enable" = 1 ]; then
  # --timeout 0: the default 30 s is also the timeout of every request to the plugin, which
  # would cut `docker logs -f` after 30 s.
  docker plugin enable --timeout 0 "$name" >/dev/null
fi
id="$(docker plugin inspect -f '{{.Id}}' "$name")"
say "done in $((SECONDS - start)) s: plugin $name ($( [ "$enable" = 1 ] && echo enabled || echo disabled)," \
    "image $(awk -v s="$size" 'BEGIN {printf "%.0f MB", s/1e6}'), id ${id:0:12});" \
    "use --log-driver=$name; its socket: /run/docker/plugins/$id/pylog.sock"
