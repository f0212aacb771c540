"""A container logging through pylog while pylog does heavy background work for another one.

The event loop only moves bytes and answers requests: a stopped container's 1 GiB current file
reopened without a saved walk (as after a crash) is walked in a worker, and its fluentd sink
catching up over compressed rotated files reads and inflates them in workers. Meanwhile another
container prints ``--lines`` short lines through the same ``pylog serve``; its run time (dockerd's
StartedAt to FinishedAt) is compared with the same container on a ``pylog serve`` with no
background work, in the same invocation. The fluentd receiver (bench/peers.py) decodes every
record, as fluentd does.

    python bench/bench_background.py [--lines 200000] [--current-mib 1024]
"""

from __future__ import annotations

import argparse
import gzip
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import IMAGE, LABEL, Peer, PylogServe, api, ensure_image, parse_ts, remove_containers  # noqa: E402

from pylog.entry import LogEntry  # noqa: E402
from pylog.frames import encode_frame  # noqa: E402

ROTATED_MIB = 20  # each of the three compressed rotated files, uncompressed


def block(tag: str, mib: int = 1) -> bytes:
    """About ``mib`` MiB of whole frames (short lines, as a busy service writes)."""
    frames, size, i = [], 0, 0
    t0 = time.time_ns()
    while size < mib << 20:
        f = encode_frame(LogEntry(source="stdout", time_nano=t0 + i,
                                  line=b"%s line %09d of the background container" % (
                                      tag.encode(), i)))
        frames.append(f)
        size += len(f)
        i += 1
    return b"".join(frames)


def stored_log(state_dir: Path, cid: str, current_mib: int, fluentd: str) -> int:
    """A stopped container's log as pylog left it after a crash: three compressed rotated files
    and a big current file, no saved walk, a fluentd sink that has delivered nothing yet.
    Returns the lines its sink has to catch up through."""
    d = state_dir / "containers" / cid
    d.mkdir(parents=True)
    one = block("rotated")
    per_block = one.count(b"\n\x06stdout")
    for seq in (1, 2, 3):
        with gzip.open(d / f"container.log.{seq}.gz", "wb", compresslevel=1) as f:
            for _ in range(ROTATED_MIB):
                f.write(one)
    current = block("current", 8)
    with open(d / "container.log", "wb") as f:
        for _ in range(current_mib // 8):
            f.write(current)
    (d / "seq.json").write_text(json.dumps({"next": 4}))
    max_size = (current_mib + 64) << 20
    (d / "store-options.json").write_text(json.dumps(
        {"max-size": max_size, "max-file": 5, "compress": True}))
    (d / "log-opts.json").write_text(json.dumps(
        {"fluentd-address": fluentd, "max-size": str(max_size), "max-file": "5"}))
    return 3 * ROTATED_MIB * per_block + (current_mib // 8) * current.count(b"\n\x06stdout")


def timed_container(pylog: PylogServe, lines: int) -> tuple[float, str]:
    """Run one container printing ``lines`` lines through ``pylog``: its run time and ID."""
    body = {"Image": IMAGE, "Cmd": ["seq", "1", str(lines)], "Labels": {LABEL: "1"},
            "HostConfig": {"LogConfig": {"Type": pylog.name, "Config": {}}}}
    cid = str(api("POST", f"/containers/create?name=pylogbench-{secrets.token_hex(5)}",
                  body)["Id"])
    api("POST", f"/containers/{cid}/start")
    api("POST", f"/containers/{cid}/wait")
    state = api("GET", f"/containers/{cid}/json")["State"]
    return (parse_ts(state["FinishedAt"]) - parse_ts(state["StartedAt"])) / 1e9, cid


def logged_lines(cid: str) -> int:
    r = subprocess.run(["docker", "logs", cid], capture_output=True, timeout=600, check=True)
    return r.stdout.count(b"\n")


def walk_seconds(pylog: PylogServe) -> float | None:
    for line in pylog.log_path.read_text(errors="replace").splitlines():
        if '"event": "walked"' in line:
            return float(json.loads(line)["seconds"])
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--current-mib", type=int, default=1024)
    args = ap.parse_args()
    ensure_image()
    work = Path(tempfile.mkdtemp(prefix="pylog-bench-bg-", dir="/var/lib/docker"))
    peer = Peer("forward", work)
    ids: list[str] = []
    try:
        quiet = PylogServe(work)
        quiet.start()
        timed_container(quiet, 1)  # warm: the plugin's activation is not measured
        alone, cid = timed_container(quiet, args.lines)
        ids.append(cid)
        assert logged_lines(cid) == args.lines
        quiet.stop()

        busy = PylogServe(work)
        background = f"{secrets.randbits(256):064x}"
        t = time.monotonic()
        total = stored_log(busy.state_dir, background, args.current_mib, peer.url())
        made = time.monotonic() - t
        peer.reset()
        busy.start()  # resumes the background container's sink, reopens its log
        timed_container(busy, 1)
        before = peer.stats()["tags"].get(background[:12], {}).get("events", 0)
        loaded, cid = timed_container(busy, args.lines)
        ids.append(cid)
        after = peer.stats()["tags"].get(background[:12], {}).get("events", 0)
        assert logged_lines(cid) == args.lines
        walked = walk_seconds(busy)
        busy.stop()
        print(f"background: a {args.current_mib} MiB current file reopened without a saved "
              f"walk (made in {made:.0f} s) and a fluentd sink catching up over "
              f"{3 * ROTATED_MIB} MiB of compressed files ({total:,} lines to deliver)")
        print(f"  walk of the current file: {walked:.2f} s" if walked is not None else
              "  walk of the current file: not finished when pylog stopped")
        print(f"  background lines delivered to fluentd while the container ran: "
              f"{after - before:,} (of {total:,})")
        print(f"{args.lines:,} lines, run time alone: {alone:.3f} s; with the background "
              f"work: {loaded:.3f} s; ratio {loaded / alone:.2f}x (target <= 1.10x)")
        return 0
    finally:
        remove_containers(ids)
        peer.close()


if __name__ == "__main__":
    sys.exit(main())
