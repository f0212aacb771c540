"""`docker logs` of a big container: pylog against json-file and local, in one run.

One container per driver prints ``--lines`` short lines (``seq``) and exits; then, alternating
drivers over ``--rounds`` rounds (A B C, C B A, ...), ``docker logs`` reads them back, whole and
with ``--tail``. For each read: the wall time until the CLI has printed every byte, the lines it
printed (must equal ``--lines``, or the tail), pylog's CPU seconds and its peak RSS while it
answered (psutil, sampled every 20 ms), and dockerd's CPU seconds (dockerd decodes every
driver's frames). Ratios are to json-file in the same run.

    python bench/bench_logs.py [--lines 1000000] [--rounds 3] [--tail 1000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    IMAGE,
    PylogServe,
    RssSampler,
    cpu_seconds,
    ensure_image,
    export_tree,
    find_process,
    remove_containers,
)


def read_logs(cid: str, args: list[str]) -> tuple[float, int]:
    """Seconds until `docker logs` printed everything, and the lines it printed."""
    t0 = time.monotonic()
    proc = subprocess.Popen(["docker", "logs", *args, cid], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines = 0
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):  # type: ignore[union-attr]
        lines += chunk.count(b"\n")
    proc.wait()
    return time.monotonic() - t0, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tail", type=int, default=1000)
    ap.add_argument("--baseline", default="", metavar="REF",
                    help="also read through a pylog running from this git commit (pylog@base)")
    args = ap.parse_args()
    ensure_image()
    dockerd = find_process("dockerd")
    with tempfile.TemporaryDirectory(prefix="pylog-bench-logs-") as tmp:
        pylogs = {"pylog": PylogServe(Path(tmp))}
        if args.baseline:
            pylogs["pylog@base"] = PylogServe(Path(tmp),
                                               export_tree(args.baseline, Path(tmp) / "base"))
        for p in pylogs.values():
            p.start()
            assert p.ps is not None
        pylog = pylogs["pylog"]
        drivers = {"json-file": "json-file", "local": "local",
                   **{name: p.name for name, p in pylogs.items()}}
        cids: dict[str, str] = {}
        try:
            for name, driver in drivers.items():
                cid = subprocess.run(["docker", "run", "-d", "--network", "none", "--log-driver",
                                      driver, IMAGE, "seq", "1", str(args.lines)],
                                     capture_output=True, text=True, check=True).stdout.strip()
                cids[name] = cid
                subprocess.run(["docker", "wait", cid], capture_output=True, check=True)
            idle_rss = pylog.ps.memory_info().rss  # type: ignore[union-attr]
            reads = {"all": [], f"--tail {args.tail}": []}
            results: dict[tuple[str, str], list[tuple[float, int, float, int, float]]] = {}
            order = list(drivers)
            for r in range(args.rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    for what in reads:
                        extra = [] if what == "all" else ["--tail", str(args.tail)]
                        ps = pylogs.get(name, pylog).ps
                        assert ps is not None
                        c0, d0 = cpu_seconds(ps), cpu_seconds(dockerd)
                        with RssSampler(ps) as rss:
                            took, lines = read_logs(cids[name], extra)
                        cpu = cpu_seconds(ps) - c0 if name in pylogs else 0.0
                        peak = rss.peak if name in pylogs else 0
                        results.setdefault((name, what), []).append(
                            (took, lines, cpu, peak, cpu_seconds(dockerd) - d0))
        finally:
            remove_containers(list(cids.values()))
            for p in pylogs.values():
                p.stop()
    print(f"`docker logs` of a container that printed {args.lines:,} lines "
          f"({args.rounds} rounds, medians, min-max)")
    print(f"pylog's RSS before the reads (the containers stored): {idle_rss / 2**20:.0f} MB")
    print(f"{'read':<12} {'driver':<10} {'seconds':>18} {'x json-file':>11} {'lines':>9} "
          f"{'dockerd CPU-s':>13} {'pylog CPU-s':>11} {'pylog peak RSS':>14}")
    for what in ("all", f"--tail {args.tail}"):
        base = statistics.median(t[0] for t in results[("json-file", what)])
        for name in drivers:
            runs = results[(name, what)]
            times = [t[0] for t in runs]
            lines = sorted({t[1] for t in runs})
            med = statistics.median(times)
            pylog_cols = (f"{statistics.median(t[2] for t in runs):>11.2f} "
                          f"{max(t[3] for t in runs) / 2**20:>11.0f} MB") if name in pylogs \
                else f"{'':>11} {'':>14}"
            print(f"{what:<12} {name:<10} {med:>7.2f} ({min(times):.2f}-{max(times):.2f}) "
                  f"{med / base:>11.2f} {'/'.join(map(str, lines)):>9} "
                  f"{statistics.median(t[4] for t in runs):>13.2f} {pylog_cols}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
