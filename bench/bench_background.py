"""A container logging through pylog while pylog does heavy background work for another one.

The event loop only moves bytes and answers requests: a stopped container's 1 GiB current file
reopened without a saved walk (as after a crash) is walked in a worker, and its fluentd sink
catching up over compressed rotated files reads and inflates them in workers. Meanwhile another
container prints ``--lines`` lines of 100 bytes through the same ``pylog serve``; its run time
(dockerd's StartedAt to FinishedAt) is compared with the same container on a second ``pylog
serve`` with no background work. The two alternate, run by run, and the busy one is stopped
(SIGSTOP, its walker process too) while the quiet one is measured: this machine's run times of
one container vary 3x from minute to minute (json-file's too), and alternating puts both
conditions in the same minutes. The fluentd receiver (bench/peers.py) decodes every record, as
fluentd does.

    python bench/bench_background.py [--lines 200000] [--current-mib 1024] [--runs 15]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    IMAGE,
    LABEL,
    Peer,
    PylogServe,
    api,
    cpu_seconds,
    ensure_image,
    parse_ts,
    remove_containers,
)

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


def stored_log(state_dir: Path, cid: str, current_mib: int, fluentd: str | None) -> int:
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
    opts = {"max-size": str(max_size), "max-file": "5"}
    if fluentd:
        opts["fluentd-address"] = fluentd
    (d / "log-opts.json").write_text(json.dumps(opts))
    return 3 * ROTATED_MIB * per_block + (current_mib // 8) * current.count(b"\n\x06stdout")


def timed_container(pylog: PylogServe, lines: int) -> str:
    """Run one container printing ``lines`` lines of 100 bytes through ``pylog`` (20 MB for
    200,000: long enough for dockerd's start and exit times to measure it)."""
    script = ("awk 'BEGIN { pad = sprintf(\"%90s\", \"\"); gsub(/ /, \"x\", pad); "
              f"for (i = 1; i <= {lines}; i++) printf \"%08d %s\\n\", i, pad }}'")
    body = {"Image": IMAGE, "Cmd": ["sh", "-c", script], "Labels": {LABEL: "1"},
            "HostConfig": {"LogConfig": {"Type": pylog.name, "Config": {}}}}
    cid = str(api("POST", f"/containers/create?name=pylogbench-{secrets.token_hex(5)}",
                  body)["Id"])
    api("POST", f"/containers/{cid}/start")
    api("POST", f"/containers/{cid}/wait")
    return cid


def run_time(cid: str, lines: int) -> float:
    """The container's run time (dockerd's StartedAt to FinishedAt), after checking that
    ``docker logs`` has every line."""
    r = subprocess.run(["docker", "logs", cid], capture_output=True, timeout=600, check=True)
    assert r.stdout.count(b"\n") == lines, (cid, r.stdout.count(b"\n"))
    state = api("GET", f"/containers/{cid}/json")["State"]
    return (parse_ts(state["FinishedAt"]) - parse_ts(state["StartedAt"])) / 1e9


@contextlib.contextmanager
def stopped(pylog: PylogServe) -> Iterator[None]:
    """``pylog`` and its children (the walker process) stopped (SIGSTOP) meanwhile."""
    assert pylog.ps is not None
    procs = [pylog.ps, *pylog.ps.children(recursive=True)]
    for p in procs:
        p.suspend()
    try:
        yield
    finally:
        for p in procs:
            p.resume()


def alternate(quiet: PylogServe, busy: PylogServe, args: argparse.Namespace,
              ids: list[str]) -> tuple[list[float], list[float]]:
    """``--runs`` containers on each, alternating (on ``quiet`` while ``busy`` is stopped):
    their run times, each checked whole in ``docker logs`` after all ran."""
    q, b = [], []
    for _ in range(args.runs):
        with stopped(busy):
            q.append(timed_container(quiet, args.lines))
        b.append(timed_container(busy, args.lines))
    ids += q + b
    return [run_time(c, args.lines) for c in q], [run_time(c, args.lines) for c in b]


def fmt(times: list[float]) -> str:
    return f"median {statistics.median(times):.3f} s ({', '.join(f'{t:.3f}' for t in times)})"


def cpu_by_thread(ps: psutil.Process) -> tuple[float, float]:
    """CPU seconds of the process's main (event loop) thread, and of all its other threads."""
    main, rest = 0.0, 0.0
    for t in ps.threads():
        if t.id == ps.pid:
            main += t.user_time + t.system_time
        else:
            rest += t.user_time + t.system_time
    return main, rest


def loop_holds(pylog: PylogServe) -> list[float]:
    """The event loop holds over 0.1 s pylog logged (looplag.py: at most one every 10 s)."""
    return [float(json.loads(line)["seconds"])
            for line in pylog.log_path.read_text(errors="replace").splitlines()
            if '"event": "loop_held"' in line]


def walk_seconds(pylog: PylogServe) -> float | None:
    for line in pylog.log_path.read_text(errors="replace").splitlines():
        if '"event": "walked"' in line:
            return float(json.loads(line)["seconds"])
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--current-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=15, help="measured containers per condition")
    ap.add_argument("--no-sink", action="store_true", help="the walk alone, no sink catching up")
    args = ap.parse_args()
    ensure_image()
    work = Path(tempfile.mkdtemp(prefix="pylog-bench-bg-", dir="/var/lib/docker"))
    peer = Peer("forward", work)
    ids: list[str] = []
    quiet, busy = PylogServe(work), PylogServe(work)
    try:
        quiet.start()
        timed_container(quiet, 1)  # warm: the plugin's activation is not measured
        background = f"{secrets.randbits(256):064x}"
        t = time.monotonic()
        total = stored_log(busy.state_dir, background, args.current_mib,
                           None if args.no_sink else peer.url())
        made = time.monotonic() - t
        peer.reset()
        busy.start()  # resumes the background container's sink, reopens its log
        started = time.monotonic()
        timed_container(busy, 1)
        before = peer.stats()["tags"].get(background[:12], {}).get("events", 0)
        assert busy.ps is not None
        cpu0 = cpu_by_thread(busy.ps), cpu_seconds(peer.ps)
        alone, loaded = alternate(quiet, busy, args, ids)
        span = time.monotonic() - started
        cpu1 = cpu_by_thread(busy.ps), cpu_seconds(peer.ps)
        after = peer.stats()["tags"].get(background[:12], {}).get("events", 0)
        walked = walk_seconds(busy)
        holds = loop_holds(busy)
        print(f"background: a {args.current_mib} MiB current file reopened without a saved "
              f"walk (made in {made:.0f} s) and a fluentd sink catching up over "
              f"{3 * ROTATED_MIB} MiB of compressed files ({total:,} lines to deliver)")
        print(f"  the measured containers ran from 0 to {span:.1f} s after pylog started (the "
              f"busy pylog stopped half of it); "
              + (f"the walk of the current file took {walked:.1f} s" if walked is not None else
                 "the walk of the current file had not finished at the end"))
        print(f"  background lines delivered to fluentd meanwhile: {after - before:,} "
              f"(of {total:,})")
        loop_cpu = cpu1[0][0] - cpu0[0][0]
        workers_cpu = cpu1[0][1] - cpu0[0][1]
        print(f"  CPU seconds meanwhile: pylog's event loop thread {loop_cpu:.1f}, its workers "
              f"{workers_cpu:.1f}, the fluentd receiver {cpu1[1] - cpu0[1]:.1f}")
        print(f"  pylog's event loop held over 0.1 s: {len(holds)} times logged"
              + (f" (longest {max(holds):.3f} s)" if holds else ""))
        a, b = statistics.median(alone), statistics.median(loaded)
        pairs = statistics.median(y / x for x, y in zip(alone, loaded))
        print(f"{args.lines:,} lines, run time alone: {fmt(alone)}; with the background work: "
              f"{fmt(loaded)}; ratio of the medians {b / a:.2f}x, median of the {args.runs} "
              f"pairs' ratios {pairs:.2f}x (target <= 1.10x)")
        return 0
    finally:
        quiet.stop()
        busy.stop()
        remove_containers(ids)
        peer.close()


if __name__ == "__main__":
    sys.exit(main())
