"""Per-line cost of each step between the FIFO and a fluentd or Elasticsearch sink, without
dockerd.

``bench/run.py`` measures pylog as a whole (CPU seconds per million lines, against Docker's own
drivers). This times the steps one at a time on the same 1,000,000 short lines, in the sizes the
code uses them, so a change to one of them can be measured on its own:

- the store's walk over newly stored bytes (``frame_lengths``: split at each body start and
  proven against the length fields), per splice-sized chunk;
- the delivery's decoding of a batch of stored frames into columns (``decode_columns``), and the
  frame-by-frame decoder it falls back to for damaged or partial frames (``FrameDecoder``);
- the fluentd sink's encoding of a batch (``encode_parts``), with and without the namespace
  enrichment, and whole PackedForward messages (``FluentdSink.messages``);
- the Elasticsearch sink's documents (``bulk_documents``: ids and record columns, each on its
  own too), its request bodies, and whole sends (``ElasticsearchSink.send``) to the bench's
  ``_bulk`` receiver (bench/peers.py) in its own process: this process's CPU, so what the sink
  spends on the event loop, aiohttp and the kernel's share of sending is in that step.

Fluentd's sending and the event loop are not in it: ``bench/run.py`` has those.

    python bench/bench_delivery.py [--lines N] [--batch BYTES] [--chunk BYTES]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pylog.entry import LogEntry
from pylog.frames import Columns, FrameDecoder, decode_columns, encode_frame, frame_lengths
from pylog.malloc import keep_freed_memory
from pylog.namespaces import hold_namespaces
from pylog.options import parse_log_options
from pylog.record import ContainerContext, build_context, record_columns
from pylog.sinks.elasticsearch import ElasticsearchSink, bulk_documents, chunks, document_ids
from pylog.sinks.fluentd import FluentdSink
from pylog.sinks.fluentd_encode import encode_parts
from pylog.sinks.loki_encode import push_bodies
from pylog.sinks.loki_settings import DEFAULT_EXTERNAL_LABELS, parse_external_labels
from pylog.sinks.otlp_encode import request_body

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=256 << 10,
                    help="bytes of stored frames per delivery batch (pylog.delivery.READ_BYTES)")
    ap.add_argument("--chunk", type=int, default=128 << 10,
                    help="bytes per store walk (what one splice brings; pylog.stream.BATCH_BYTES)")
    args = ap.parse_args()
    keep_freed_memory()  # as pylog serve does
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
        start = time.process_time()
        out = fn()
        dt = time.process_time() - start
        print(f"  {name:66s} {dt:6.2f} CPU-s  {dt / n * 1e6:5.2f} us/line")
        return out

    def walk() -> None:
        pos = 0
        while pos < len(data):
            lengths = frame_lengths(data[pos:pos + args.chunk])
            assert lengths is not None
            pos += 4 * len(lengths) + sum(lengths)

    def columns() -> list[Columns]:
        out = []
        pos = 0
        while pos < len(data):
            got = decode_columns(data[pos:pos + args.batch])
            assert got is not None
            out.append(got[0])
            pos += got[1]
        return out

    def frame_by_frame() -> int:
        dec = FrameDecoder(1 << 20)
        return sum(len(dec.feed(data[i:i + args.batch]).entries)
                   for i in range(0, len(data), args.batch))

    def encode(ctx: ContainerContext) -> None:
        for batch in batches:
            encode_parts(batch, ctx, True)

    def messages(ctx: ContainerContext) -> int:
        return sum(len(body) + len(option) for batch in batches
                   for body, option, _ in sink.messages(batch, ctx))

    print(f"{n:,} stored lines ({len(data):,} bytes); store walks of {args.chunk:,} bytes, "
          f"delivery batches of {args.batch:,} bytes:")
    step("store: walk new bytes (frame_lengths)", walk)
    batches = step("delivery: decode a batch into columns (decode_columns)", columns)
    step("  (frame-by-frame fallback, FrameDecoder.feed)", frame_by_frame)
    step("fluentd: encode entries, enriched (encode_parts)", lambda: encode(enriched))
    step("fluentd: encode entries, namespaces=false", lambda: encode(plain))
    size = step("fluentd: PackedForward messages, enriched (FluentdSink.messages)",
                lambda: messages(enriched))
    print(f"  ({size / n:.0f} bytes per enriched record on the wire)")

    cid = enriched.container_id
    step("elasticsearch: ids (document_ids)",
         lambda: [document_ids(batch, cid) for batch in batches])
    step("elasticsearch: record columns, enriched (record_columns)",
         lambda: [record_columns(batch, enriched) for batch in batches])
    docs = step("elasticsearch: documents, enriched (bulk_documents)",
                lambda: [bulk_documents(batch, enriched) for batch in batches])
    size = step("elasticsearch: request bodies (chunks, Docs.body)",
                lambda: sum(len(c.body()) for d in docs for c in chunks(
                    d, ElasticsearchSink.BULK_MAX_BYTES)))
    print(f"  ({size / n:.0f} bytes per document on the wire)")
    docs.clear()  # memory for the sends
    step("otlp: request bodies, enriched (request_body: protobuf, gzip)",
         lambda: [request_body(batch, enriched, "http/protobuf", True) for batch in batches])
    labels = parse_external_labels("", DEFAULT_EXTERNAL_LABELS)
    step("loki: push bodies, enriched (push_bodies: protobuf, snappy)",
         lambda: [push_bodies(batch, enriched, labels, False, 1 << 20) for batch in batches])
    peer = subprocess.Popen([sys.executable, str(Path(__file__).parent / "peers.py"), "es"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None
        port = json.loads(peer.stdout.readline())["port"]
        es = ElasticsearchSink(ElasticsearchSink.configure(parse_log_options(
            {"elasticsearch-url": f"http://127.0.0.1:{port}"}).values),  # type: ignore[arg-type]
            Path("/nonexistent"))

        async def send_all() -> None:
            await es.send([batches[0][0]], enriched)  # connected, template installed
            start = time.process_time()
            for batch in batches:
                await es.send(batch, enriched)
            dt = time.process_time() - start
            print(f"  {'elasticsearch: send every batch (ElasticsearchSink.send)':66s} "
                  f"{dt:6.2f} CPU-s  {dt / n * 1e6:5.2f} us/line")
            await es.close()

        asyncio.run(send_all())
        assert es.created == n + 1, es.created
    finally:
        peer.kill()


if __name__ == "__main__":
    main()
