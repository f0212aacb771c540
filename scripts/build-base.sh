#!/usr/bin/env bash
# The plugin's base image where no image registry is reachable: Debian bookworm (whose python3 is
# 3.11) made with debootstrap, with python3 and ca-certificates only, brought up to date from
# bookworm-updates and bookworm-security, trimmed, and `docker import`ed as IMAGE.
#
#   scripts/build-base.sh [IMAGE]          (default pylog-base:bookworm; about a minute)
#
# Skipped when IMAGE exists and was made by this same script (a label holds the script's hash),
# so `make plugin` pays for it once per machine. Needs root, debootstrap and Debian's mirror
# (DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

image="${1:-pylog-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
recipe="$(sha256sum "$0" | cut -c1-16)"

have="$(docker image inspect -f '{{index .Config.Labels "pylog.base-recipe"}}' "$image" 2>/dev/null || true)"
if [ "$have" = "$recipe" ]; then
  echo "build-base: $image is up to date (recipe $recipe)"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-base: debootstrap is not installed (apt-get install debootstrap, or" \
       "bash scripts/setup-host.sh --for-tests)" >&2
  exit 1
fi

work="$(mktemp -d /var/tmp/pylog-base.XXXXXX)"
root="$work/rootfs"
cleanup() {
  # debootstrap mounts proc/sys in the target while it runs: never rm -rf through a mount.
  awk -v r="$root" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$SECONDS
echo "build-base: debootstrap bookworm from $mirror (python3, ca-certificates)"
debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
echo "build-base: apt-get upgrade from bookworm-updates and bookworm-security"
chroot "$root" sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq &&
  apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade && apt-get clean' \
  >"$work/upgrade.log" 2>&1 || { tail -n 30 "$work/upgrade.log" >&2; exit 1; }

# Nothing at run time reads these: documentation, translations, apt's lists and caches.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
       "$root"/var/cache/debconf/*-old "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache

tar -C "$root" --numeric-owner -c . | docker import \
  -c "LABEL pylog.base-recipe=$recipe" \
  -c 'ENV LANG=C.UTF-8' \
  -c 'CMD ["python3"]' \
  -m "debootstrap bookworm + python3 (scripts/build-base.sh)" - "$image" >/dev/null
echo "build-base: $image made in $((SECONDS - start)) s" \
     "($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
