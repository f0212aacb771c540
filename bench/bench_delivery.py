"""Per-line cost of each step of a sink delivery, without dockerd (issue: pylog's CPU per line).

``bench/run.py`` measures pylog as a whole; its profile (bench/RESULTS.md) puts most of the
fluentd sink's CPU in reading the store back and encoding. This times those steps one at a time
on the same 1,000,000 short lines, as the delivery does them: decoding the stored frames
(protobuf), one ``Position`` per entry (the cursor), reassembly, and the fluentd encoding of a
batch (with and without namespace enrichment), so a change to one of them can be measured.

    python bench/bench_delivery.py [--lines N] [--batch BYTES]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pylog.delivery import Position
from pylog.entry import LogEntry
from pylog.frames import FrameDecoder, encode_frame
from pylog.namespaces import hold_namespaces
from pylog.options import parse_log_options
from pylog.reassembly import Line, Reassembler
from pylog.record import ContainerContext, build_context
from pylog.sinks.fluentd import FluentdSink, encode_entries

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=256 << 10,
                    help="bytes of stored frames per batch (pylog.delivery.READ_BYTES)")
    args = ap.parse_args()
    n = args.lines
    t0 = 1_795_319_769_670_262_696
    data = b"".join(encode_frame(LogEntry(source="stdout", time_nano=t0 + i * 1000,
                                          line=b"%d" % i)) for i in range(1, n + 1))
    info = json.loads((VECTORS / "requests.jsonl").read_text().splitlines()[2])["body"]["Info"]
    options = parse_log_options(info["Config"])
    enriched = build_context(info, options, hold_namespaces(os.getpid()), host={})
    plain = build_context(info, options)
    config = FluentdSink.configure(
        parse_log_options({"fluentd-address": "tcp://127.0.0.1:24224"}).values)
    assert config is not None
    sink = FluentdSink(config, Path("/nonexistent"))  # only its encoder is used

    def step(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - start
        print(f"  {name:50s} {dt:6.2f} s  {dt / n * 1e6:5.2f} us/line")
        return out

    def decode() -> list[LogEntry]:
        dec = FrameDecoder(1 << 20)
        entries: list[LogEntry] = []
        for i in range(0, len(data), args.batch):
            entries += dec.feed(data[i:i + args.batch]).entries
        return entries

    def reassemble(entries: list[LogEntry]) -> list[Line]:
        r = Reassembler()
        out = []
        for e in entries:
            line = r.push(e)
            if line is not None:
                out.append(line)
            if not r.pending:
                pass  # the delivery checks this per entry to know where the cursor may go
        return out

    per_batch = max(1, n * args.batch // len(data))

    def encode(ctx: ContainerContext) -> None:
        for i in range(0, n, per_batch):
            encode_entries(lines[i:i + per_batch], ctx, True)

    def messages(ctx: ContainerContext) -> None:
        for i in range(0, n, per_batch):
            sink.messages(lines[i:i + per_batch], ctx)

    print(f"{n:,} stored lines ({len(data):,} bytes), batches of {args.batch:,} bytes "
          f"(~{per_batch:,} lines):")
    entries = step("decode stored frames (FrameDecoder.feed)", decode)
    step("one Position per entry (the cursor)", lambda: [Position(0, i) for i in range(n)])
    step("  (the same as plain tuples)", lambda: [(0, i) for i in range(n)])
    lines = step("reassembly (Reassembler.push, .pending)", lambda: reassemble(entries))
    step("fluentd entries, enriched (encode_entries)", lambda: encode(enriched))
    step("fluentd entries, namespaces=false", lambda: encode(plain))
    step("fluentd messages, enriched (entries + packing)", lambda: messages(enriched))


if __name__ == "__main__":
    main()
