"""Records per second with namespace enrichment vs without, in one run (issue: enrichment cost).

The container context is built once per container and pre-encoded, so per line pylog only adds
time, stream and message. This measures the JSON record (what the Elasticsearch sink indexes and
`pylog tail` prints) for the same lines with a context that carries all eight namespaces (and
sharing) and with one built with `namespaces=false`, alternating A B A B over several rounds.

    python bench/bench_records.py [--lines N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from pylog.entry import LogEntry
from pylog.malloc import keep_freed_memory
from pylog.namespaces import hold_namespaces
from pylog.nsregistry import NamespaceRegistry
from pylog.options import parse_log_options
from pylog.record import TimestampFormatter, build_context, record_json, records

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    keep_freed_memory()  # as pylog serve does: records bigger than 512 bytes are malloc'ed

    info = json.loads((VECTORS / "requests.jsonl").read_text().splitlines()[2])["body"]["Info"]
    options = parse_log_options(info["Config"])
    held = hold_namespaces(os.getpid())
    registry = NamespaceRegistry()
    registry.add(info["ContainerID"], held)
    registry.add("f" * 64, hold_namespaces(os.getpid()))  # a second container sharing all
    enriched = build_context(info, options, held, host={}, registry=registry,
                             names={"f" * 64: "sidecar"})
    plain = build_context(info, options)
    t0 = 1_795_319_769_670_262_696
    lines = [LogEntry(source="stdout", time_nano=t0 + i * 1000,
                      line=b"GET /api/v1/items?page=%d 200 1532 bytes in 3 ms" % i)
             for i in range(args.lines)]

    batch = 500  # sinks encode batches of lines of one container

    def run(ctx: object) -> float:
        start = time.perf_counter()
        for i in range(0, len(lines), batch):
            records(lines[i:i + batch], ctx)  # type: ignore[arg-type]
        return args.lines / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {"without": [], "with": []}
    run(plain)  # warm up
    for i in range(args.rounds):  # alternate which goes first, so neither gets the warmer cache
        order = [("without", plain), ("with", enriched)]
        for name, ctx in order if i % 2 == 0 else reversed(order):
            rates[name].append(run(ctx))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"records/s over {args.lines} lines, {args.rounds} rounds (median, min-max):")
    for k in ("without", "with"):
        print(f"  {k:8s} enrichment: {med[k]:>10,.0f}  ({min(rates[k]):,.0f}-{max(rates[k]):,.0f})")
    print(f"  with/without: {med['with'] / med['without']:.3f}"
          f"  (record size {len(record_json(lines[0], enriched, TimestampFormatter()))} vs "
          f"{len(record_json(lines[0], plain, TimestampFormatter()))} bytes)")
    registry.close()


if __name__ == "__main__":
    main()
