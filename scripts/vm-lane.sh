#!/usr/bin/env bash
# Run an in-guest script on a Debian release's own kernel, systemd and docker.io under QEMU (TCG).
# Usage: vm-lane.sh debian-12|debian-13 [guest-script]   (default: scripts/vm/guest/pylog.sh, which
# runs guest/smoke.sh first and then pylog as a systemd service; smoke.sh alone needs no PyPI)
# A guest script NAME.sh may come with a host-side NAME.prepare.sh that fills the share first.
# Exits with the guest script's exit code; prints the guest's console log if it never reported one.
set -euo pipefail
cd "$(dirname "$0")/.."
lane="${1:?usage: $0 debian-12|debian-13 [guest-script]}"
script="${2:-scripts/vm/guest/pylog.sh}"
timeout_s="${PYLOG_VM_TIMEOUT:-900}"

command -v qemu-system-x86_64 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 qemu-utils >/dev/null; }
image="$(bash scripts/vm/build-image.sh "$lane" | tail -n1)"

run="$(mktemp -d /var/tmp/pylog-vm-run.XXXXXX)"
share="$run/share"
mkdir -p "$share"
cp "$script" "$share/run.sh"
prepare="${script%.sh}.prepare.sh"
[ -f "$prepare" ] && bash "$prepare" "$lane" "$share"
boot() {  # one boot on a fresh copy-on-write overlay: the cached image stays pristine
  rm -f "$run/disk.qcow2"
  qemu-img create -q -f qcow2 -F raw -b "$image/image.raw" "$run/disk.qcow2"
  echo "vm-lane: $lane booting (image $image, run dir $run, console $run/console.log)"
  local start; start=$(date +%s)
  # TCG, not KVM: guests started with -enable-kvm stalled before the kernel printed anything here.
  # The guest powers itself off when its script is done (-no-reboot: a panic ends QEMU too).
  timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 4096 -smp 2 \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 panic=-1" \
    -drive "file=$run/disk.qcow2,if=virtio,format=qcow2" \
    -virtfs "local,path=$share,mount_tag=lane,security_model=none,id=lane" \
    -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
    -display none -serial "file:$run/console.log" -monitor none -no-reboot \
    || echo "vm-lane: $lane: QEMU exited $? (124: timed out after ${timeout_s} s)" >&2
  echo "vm-lane: guest ran for $(( $(date +%s) - start )) s"
}

# Multi-threaded TCG can run a stale translation of kernel text the guest is patching at boot
# (seen once: a Debian 13 kernel's "Oops: int3" in sched_clock_cpu 3 s in). A guest that panicked
# before its runner started ran nothing, so it is booted again, at most twice more.
for attempt in 1 2 3; do
  boot
  [ -d "$share/out" ] && break
  grep -q "Kernel panic" "$run/console.log" || break
  [ "$attempt" = 3 ] && break
  echo "vm-lane: $lane: the kernel panicked before the guest's runner started; the end of its console log:" >&2
  grep -E -m1 -B2 -A3 "Oops|BUG:|Kernel panic" "$run/console.log" >&2 || true
  cp "$run/console.log" "$run/console-panic-$attempt.log"
done

if [ ! -f "$share/out/rc" ]; then
  echo "vm-lane: $lane: the guest reported no result; the end of its console log:" >&2
  tail -n 60 "$run/console.log" >&2
  exit 1
fi
echo "----- guest stdout -----"; cat "$share/out/stdout"
if [ -s "$share/out/stderr" ]; then echo "----- guest stderr -----"; cat "$share/out/stderr"; fi
rc=$(cat "$share/out/rc")
echo "vm-lane: $lane: guest script exited $rc"
if [ -n "${PYLOG_ARTIFACTS:-}" ]; then  # the lane's facts (README's "tested on") and pytest's XML
  mkdir -p "$PYLOG_ARTIFACTS"
  [ -s "$share/out/facts.json" ] && cp "$share/out/facts.json" "$PYLOG_ARTIFACTS/vm-$lane.json"
  [ -s "$share/out/junit.xml" ] && cp "$share/out/junit.xml" "$PYLOG_ARTIFACTS/vm-$lane-junit.xml"
fi
# A passing run's overlay and share are of no further use; a failing one's are kept to look at.
if [ "$rc" = 0 ] && [ -z "${PYLOG_VM_KEEP:-}" ]; then rm -rf "$run"; else echo "vm-lane: kept $run"; fi
exit "$rc"
