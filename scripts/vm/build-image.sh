#!/usr/bin/env bash
# Build (or reuse) a guest disk image of a Debian release from Debian's packages only.
# Usage: build-image.sh debian-12|debian-13   Prints the image's cache directory on its last line:
# image.raw (ext4, the whole disk, no partition table), vmlinuz, initrd.img, packages.list.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mirror="${PYLOG_VM_MIRROR:-http://deb.debian.org/debian}"
cache_root="${PYLOG_VM_CACHE:-/var/cache/pylog-vm}"
image_size="${PYLOG_VM_IMAGE_SIZE:-6G}"

case "${1:-}" in
  debian-12|bookworm) codename=bookworm ;;
  debian-13|trixie) codename=trixie ;;
  *) echo "usage: $0 debian-12|debian-13" >&2; exit 2 ;;
esac

# Everything that decides the image's content goes into its cache key.
mapfile -t packages < <(cat "$here/packages.txt" "$here/packages-$codename.txt" | sed 's/#.*//' | xargs -n1)
key="$( { echo "$codename $mirror $image_size"; printf '%s\n' "${packages[@]}"; cat "$0";
          (cd "$here/image-files" && for f in $(ls); do echo "== $f"; cat "$f"; done); } | sha256sum | cut -c1-16)"
out="$cache_root/$codename-$key"
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9   # two lanes building at once would only fight over 2 cores
if [ -f "$out/image.raw" ]; then
  echo "build-image: reusing $out" >&2
  echo "$out"; exit 0
fi

work="$out.tmp"
root="$work/root"
cleanup() {
  for m in dev/pts dev proc sys; do mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"; done
  return 0
}
trap cleanup EXIT
cleanup
rm -rf "$work"; mkdir -p "$work"
start=$(date +%s)

echo "build-image: debootstrap $codename into $root (log: $work/debootstrap.log)" >&2
debootstrap --variant=minbase "$codename" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# apt inside the root resolves alternatives and skips Recommends, which debootstrap --include does not;
# policy-rc.d keeps package scripts from starting services (dockerd, apparmor) on the host's kernel.
mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"; mount --bind /dev/pts "$root/dev/pts"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
echo "build-image: apt-get install ${packages[*]} (log: $work/apt.log)" >&2
chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
  "apt-get update -q && apt-get install -y -q --no-install-recommends $(printf '%s ' "${packages[@]}")" \
  >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; exit 1; }
chroot "$root" apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
cleanup

# The guest's own configuration: root on the virtio disk, DHCP, Docker's systemd cgroup driver, the runner.
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$root/etc/fstab"
echo pylog-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 pylog-vm\n' >"$root/etc/hosts"
echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"   # QEMU user-mode networking's DNS
chroot "$root" passwd -d root >/dev/null   # console login for debugging a broken guest
install -D -m 644 "$here/image-files/daemon.json" "$root/etc/docker/daemon.json"
install -D -m 644 "$here/image-files/10-dhcp.network" "$root/etc/systemd/network/10-dhcp.network"
install -D -m 644 "$here/image-files/pylog-lane.service" "$root/etc/systemd/system/pylog-lane.service"
install -D -m 755 "$here/image-files/pylog-lane" "$root/usr/local/sbin/pylog-lane"
chroot "$root" systemctl enable systemd-networkd.service docker.service pylog-lane.service >/dev/null 2>&1
chroot "$root" systemctl disable rsyslog.service syslog.socket >/dev/null 2>&1 || true
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' >"$work/packages.list"

# The release's own kernel and initrd boot the guest via qemu -kernel/-initrd.
cp "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)" "$work/vmlinuz"
cp "$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)" "$work/initrd.img"

# mkfs.ext4 -d copies the tree (owners, modes, xattrs) into the image: no loop mount needed.
echo "build-image: mkfs.ext4 -d ($image_size, sparse)" >&2
truncate -s "$image_size" "$work/image.raw"
mkfs.ext4 -q -F -L pylog-root -d "$root" "$work/image.raw"
rm -rf "$root"
echo "built in $(( $(date +%s) - start )) s" >"$work/build-time"
mv "$work" "$out"
echo "build-image: built $out in $(cat "$out/build-time" | cut -d' ' -f3) s" >&2
echo "$out"
