"""Metrics, readiness and the sinks report, checked against known traffic without dockerd:
frames written into a FIFO through the plugin API (as tests/test_api.py does) and deliveries to
sinks whose answers the test controls."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import logging
import os
import random
import struct
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from pylog.cli import JsonFormatter, format_sinks, setup_logging
from pylog.delivery import READ_BYTES, Delivery
from pylog.driver import Driver
from pylog.entry import LogEntry
from pylog.frames import encode_frame
from pylog.metrics import (
    OpsState,
    PylogCollector,
    make_metrics_app,
    parse_address,
    readiness,
    sink_report,
)
from pylog.reader import _Inflated
from pylog.reassembly import Line
from pylog.record import ContainerContext
from pylog.sinks.base import Sink, SinkConfig, SinkError
from pylog.store import ContainerLog, StoreOptions
from tests.test_api import VECTORS, attach_and_feed
from tests.test_sink_elasticsearch import FakeTransport, make_sink

CID = "c" * 64
Samples = list[tuple[str, dict[str, str], float]]


def scrape(driver: Driver) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PylogCollector(driver))
    text = generate_latest(registry).decode()
    return [(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x
                                                             for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def names(samples: Samples) -> set[str]:
    return {n for n, _, _ in samples}


# ------------------------------------------------------------------------- through the API


async def test_lines_bytes_and_corrupt_frames_of_a_fed_fifo_are_counted(env: Any) -> None:
    client, driver, fifo_dir = env
    driver.metrics_linger = 60.0  # what --metrics-address sets: finished containers linger
    data = (VECTORS / "basic.fifo.bin").read_bytes()  # 3 frames
    first_len = 4 + struct.unpack_from(">I", data)[0]
    garbage = b"\x00\x00\x10\x00garbage that is no frame\xff" * 3
    fed = data[:first_len] + garbage + data[first_len:]
    cid = await attach_and_feed(client, driver, fifo_dir, "/basic", fed)
    assert not driver.containers  # it detached; its series stay for the linger time
    s = scrape(driver)
    short = cid[:12]
    assert value(s, "pylog_lines_in_total", container_id=short) == 3
    assert value(s, "pylog_bytes_in_total", container_id=short) == len(fed)
    assert value(s, "pylog_fifo_reads_total", container_id=short) >= 1
    assert value(s, "pylog_corrupt_regions_total", container_id=short) == 1
    assert value(s, "pylog_dropped_bytes_total", container_id=short,
                 reason="corrupt_frame") == len(garbage)
    assert value(s, "pylog_dropped_bytes_total", container_id=short, reason="disk_full") == 0
    assert value(s, "pylog_container_attachments", container_id=short) == 0
    assert value(s, "pylog_attached_containers") == 0
    name = value_labels(s, "pylog_lines_in_total", container_id=short)["container_name"]
    assert name == "basic"
    # Past the linger time the container's series are gone: cardinality stays bounded.
    driver.prune_retired(time.monotonic() + 61)
    assert "pylog_lines_in_total" not in names(scrape(driver))


async def test_counters_go_on_when_the_container_attaches_again(env: Any) -> None:
    """`docker start` (or `docker logs` of a stopped container) attaches a new FIFO while the
    series still show the container: its counters go on, nothing counted twice."""
    client, driver, fifo_dir = env
    driver.metrics_linger = 60.0
    data = (VECTORS / "basic.fifo.bin").read_bytes()
    garbage = b"\x00\x00\x10\x00no frame at all\xff" * 2
    fed = garbage + data  # (garbage at the very end would wait to be judged by what follows)
    cid = await attach_and_feed(client, driver, fifo_dir, "/basic", fed)
    for fifo in fifo_dir.iterdir():
        fifo.unlink()  # dockerd makes a new FIFO each time
    assert await attach_and_feed(client, driver, fifo_dir, "/basic", fed) == cid
    s = scrape(driver)
    short = cid[:12]
    assert value(s, "pylog_lines_in_total", container_id=short) == 6
    assert value(s, "pylog_bytes_in_total", container_id=short) == 2 * len(fed)
    # The first run's garbage is in the file the second run opened again: not counted again.
    assert value(s, "pylog_dropped_bytes_total", container_id=short,
                 reason="corrupt_frame") == 2 * len(garbage)
    assert value(s, "pylog_corrupt_regions_total", container_id=short) == 2


def value_labels(samples: Samples, name: str, **labels: str) -> dict[str, str]:
    (found,) = [lab for n, lab, _ in samples if n == name and all(lab.get(k) == x
                                                                  for k, x in labels.items())]
    return found


async def test_without_the_listener_finished_containers_are_not_kept(env: Any) -> None:
    client, driver, fifo_dir = env
    r = await client.get("/pylog/v1/sinks")  # `pylog ps` asks the plugin socket for the sinks
    assert r.status == 200 and await r.json() == {"Sinks": []}
    assert driver.metrics_linger == 0
    await attach_and_feed(client, driver, fifo_dir, "/basic",
                          (VECTORS / "basic.fifo.bin").read_bytes())
    assert driver.retired_logs == {} and "pylog_lines_in_total" not in names(scrape(driver))


async def test_a_half_frame_cut_off_a_new_stream_is_a_corrupt_frame_drop(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as ex:
        frame = encode_frame(LogEntry(source="stdout", time_nano=1, line=b"x\n"))
        d = tmp_path / CID
        d.mkdir()
        (d / "container.log").write_bytes(frame + frame[:7])
        clog = ContainerLog(d, StoreOptions(), ex)
        assert clog.stats.frames == 0  # what was there before is not "in"
        clog.abandon_partial()
        await clog.ready()  # the walk in a worker says where the half frame starts
        assert (clog.stats.corrupt_bytes, clog.stats.dropped_bytes) == (7, 0)
        clog.append(frame)
        assert clog.stats.frames == 1
        clog.close()


async def test_metrics_listener_routes(env: Any) -> None:
    _, driver, _ = env
    state = OpsState()
    client = TestClient(TestServer(make_metrics_app(driver, state)))
    await client.start_server()
    try:
        r = await client.get("/healthz")
        assert r.status == 503  # the plugin socket is not listening yet
        state.serving = True
        r = await client.get("/healthz")
        assert r.status == 200 and await r.text() == "ok\n"
        r = await client.get("/readyz")
        assert r.status == 200 and (await r.text()).startswith("ready")
        r = await client.get("/metrics")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
        assert "pylog_attached_containers 0.0" in text and "pylog_ready 1.0" in text
        r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await r.text()).rstrip().endswith("# EOF")
        r = await client.get("/")
        page = await r.text()
        assert r.status == 200 and "namespace map" in page and "map.json" in page
        assert "http://" not in page and "https://" not in page  # nothing from elsewhere
        r = await client.get("/map.json")
        body = await r.json()
        assert body["containers"] == [] and body["sinks"] == []
    finally:
        await client.close()


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:9467") == ("127.0.0.1", 9467)
    assert parse_address("[::1]:9467") == ("::1", 9467)
    assert parse_address(":9467") == ("0.0.0.0", 9467)
    for bad in ("9467", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_address(bad)


# ------------------------------------------------------------------------- deliveries


class GateSink(Sink):
    """A sink whose sends wait for the test: ``gate`` open = take the batch; ``fail`` = raise."""

    KIND = "gate"
    ADDRESS_OPTION = "gate-address"
    OPTIONS: ClassVar[dict[str, Any]] = {"gate-address": (str, None)}

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.gate = asyncio.Event()
        self.sending = asyncio.Event()
        self.fail: str | None = None
        self.got: list[bytes] = []

    @property
    def retry_wait(self) -> float:
        return 0.01

    async def send(self, lines: list[Line], ctx: ContainerContext) -> None:
        self.sending.set()
        await self.gate.wait()
        if self.fail:
            raise SinkError(self.fail)
        self.got += [line.line for line in lines]


def entry_frame(i: int, t0: int) -> bytes:
    return encode_frame(LogEntry(source="stdout", time_nano=t0 + i * 1_000_000_000,
                                 line=b"line %06d\n" % i))


T0 = 1_795_000_000_000_000_000
FRAME_LEN = len(entry_frame(0, T0))  # every entry_frame(i, T0) has this length


def context() -> ContainerContext:
    return ContainerContext(CID, "web", "img", "sha", "tag", "host")


async def until(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.005)  # polling in-process state, bounded


def driver_with(tmp_path: Path, clog: ContainerLog, delivery: Delivery) -> Driver:
    driver = Driver(tmp_path / "state", fifo_dir=str(tmp_path))
    driver.deliveries[(CID, delivery.sink.key)] = delivery
    driver.supervisor.sinks.sinks[delivery.sink.key] = delivery.sink
    return driver


async def test_delivery_counters_spool_queue_and_lag(tmp_path: Path) -> None:
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.writers = 1  # a live stream: the delivery waits for more at the end
        sink = GateSink(SinkConfig("gate", (("gate-address", "x"),)), tmp_path)
        delivery = Delivery(clog, sink, context)
        driver = driver_with(tmp_path, clog, delivery)
        t0 = T0
        clog.append(b"".join(entry_frame(i, t0) for i in range(100)))
        delivery.start()
        await sink.sending.wait()
        s = scrape(driver)
        labels = {"container_id": CID[:12], "sink": sink.key}
        # One batch (all 100 lines) is in flight: read, handed to the sink, not acknowledged.
        assert value(s, "pylog_queue_lines", **labels) == 100
        assert value(s, "pylog_spool_bytes", **labels) == 100 * FRAME_LEN
        assert value(s, "pylog_delivery_lag_seconds", **labels) == 99.0  # newest - oldest unsent
        assert value(s, "pylog_delivered_lines_total", **labels) == 0
        assert value(s, "pylog_lines_in_total", container_id=CID[:12]) == 100
        assert value(s, "pylog_sink_state", sink=sink.key, state="up") == 1
        assert "pylog_last_success_timestamp_seconds" not in names(s)
        sink.gate.set()
        await until(lambda: delivery.lines == 100)
        await until(lambda: delivery.spool_bytes == 0)
        s = scrape(driver)
        assert value(s, "pylog_delivered_lines_total", **labels) == 100
        assert value(s, "pylog_queue_lines", **labels) == 0
        assert value(s, "pylog_delivery_lag_seconds", **labels) == 0
        assert value(s, "pylog_delivery_retries_total", **labels) == 0
        assert value(s, "pylog_last_success_timestamp_seconds", **labels) == pytest.approx(
            time.time(), abs=5)
        assert sink.got == [b"line %06d\n" % i for i in range(100)]

        # The sink fails: retries are counted, the state flips, readiness follows its limit.
        sink.gate.clear()
        sink.sending.clear()
        sink.fail = "connection refused"
        clog.append(b"".join(entry_frame(i, t0) for i in range(100, 150)))
        await sink.sending.wait()
        sink.gate.set()
        await until(lambda: delivery.retries >= 3)
        s = scrape(driver)
        assert value(s, "pylog_sink_up", sink=sink.key) == 0
        assert value(s, "pylog_sink_state", sink=sink.key, state="retrying") == 1
        assert value(s, "pylog_delivery_retries_total", **labels) >= 3
        assert value(s, "pylog_spool_bytes", **labels) == 50 * FRAME_LEN
        assert value(s, "pylog_delivery_lag_seconds", **labels) == 50.0  # 149 - 99
        assert readiness(driver, max_failing=3600) == []
        await until(lambda: readiness(driver, max_failing=0.05) != [])
        (why,) = readiness(driver, max_failing=0.05)
        assert sink.key in why and "connection refused" in why
        report = sink_report(driver)[0]
        assert report["state"] == "retrying" and report["spool_bytes"] == 50 * FRAME_LEN
        assert "retrying" in format_sinks(sink_report(driver))
        sink.fail = None
        await until(lambda: delivery.lines == 150)
        await until(lambda: delivery.spool_bytes == 0)
        assert readiness(driver, max_failing=0.05) == []
        s = scrape(driver)
        assert value(s, "pylog_sink_up", sink=sink.key) == 1
        assert value(s, "pylog_delivered_lines_total", **labels) == 150
        clog.writers = 0
        clog.wake()
        assert delivery.task is not None
        await delivery.task
        clog.close()
        await driver.close()


async def test_a_sink_behind_the_retention_counts_the_bytes_it_lost(tmp_path: Path) -> None:
    """spool_full: the store deletes files the sink has not read; the delivery counts their
    bytes, so delivered frames + lost bytes add up to everything stored. Before that, readiness
    says the sink is about to lose lines."""
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(max_size=20 * FRAME_LEN, max_file=2,
                                                         compress=False), ex)
        clog.writers = 1
        sink = GateSink(SinkConfig("gate", (("gate-address", "x"),)), tmp_path)
        delivery = Delivery(clog, sink, context)
        driver = driver_with(tmp_path, clog, delivery)
        t0 = T0
        clog.append(b"".join(entry_frame(i, t0) for i in range(10)))
        delivery.start()
        await sink.sending.wait()  # the first 10 lines are in flight; more arrive meanwhile
        clog.append(b"".join(entry_frame(i, t0) for i in range(10, 39)))
        assert delivery.spool_bytes == 39 * FRAME_LEN  # 39 of the 40 frames the store keeps
        (why,) = readiness(driver)
        assert "retention" in why and sink.key in why
        for i in range(39, 100):  # one by one, as a stream would: rotations prune old files
            clog.append(entry_frame(i, t0))
        ex.submit(lambda: None).result()  # the worker has pruned what rotation asked
        sink.gate.set()
        clog.writers = 0
        clog.wake()
        assert delivery.task is not None
        await delivery.task
        s = scrape(driver)
        labels = {"container_id": CID[:12], "sink": sink.key}
        lost = value(s, "pylog_dropped_bytes_total", reason="spool_full", **labels)
        delivered = value(s, "pylog_delivered_lines_total", **labels)
        assert lost > 0 and delivered < 100
        assert delivered * FRAME_LEN + lost == 100 * FRAME_LEN
        assert delivery.spool_bytes == 0
        clog.close()
        await driver.close()


async def test_documents_elasticsearch_rejects_are_dropped_lines(tmp_path: Path) -> None:
    fake = FakeTransport(item=lambda doc_id, doc, tries: 400 if "bad" in doc["message"] else 201)
    sink = make_sink(tmp_path, fake)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        t0 = T0
        clog.append(b"".join(encode_frame(LogEntry(
            source="stdout", time_nano=t0 + i, line=b"bad %d\n" % i if i % 4 == 0 else b"ok\n"))
            for i in range(20)))
        delivery = Delivery(clog, sink, context)
        driver = driver_with(tmp_path, clog, delivery)
        driver.metrics_linger = 60.0
        task = delivery.start()
        await task
        driver.supervisor._done((CID, sink.key), delivery, task)  # what the task's callback does
        s = scrape(driver)
        labels = {"container_id": CID[:12], "sink": sink.key}
        assert value(s, "pylog_dropped_lines_total", reason="rejected_by_sink", **labels) == 5
        assert value(s, "pylog_delivered_lines_total", **labels) == 15
        assert sink.rejected == {}  # the finished delivery took its count
        clog.close()
        await driver.close()


# ------------------------------------------------------------------------- pylog's own log


def test_log_lines_are_json_with_their_fields(capsys: pytest.CaptureFixture[str]) -> None:
    record = logging.LogRecord("pylog.delivery", logging.WARNING, __file__, 1,
                               "sink %s: delivery failed", ("fluentd-1",), None)
    record.event = "sink_down"
    record.sink = "fluentd-1"
    out = json.loads(JsonFormatter().format(record))
    assert out["level"] == "warning" and out["logger"] == "pylog.delivery"
    assert out["msg"] == "sink fluentd-1: delivery failed"
    assert out["event"] == "sink_down" and out["sink"] == "fluentd-1"
    assert out["time"].endswith("Z")


def test_an_unknown_log_level_falls_back_to_info(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging("LOUD", structured=True)
        assert root.level == logging.INFO
        (line,) = capsys.readouterr().err.splitlines()
        assert "unknown log level 'LOUD'" in json.loads(line)["msg"]
        setup_logging("WARN", structured=True)
        assert root.level == logging.WARNING
        setup_logging("debug", structured=False)
        assert root.level == logging.DEBUG
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[1]:
            root.addHandler(h)
        root.setLevel(saved[0])



async def test_an_outage_is_logged_once_down_and_once_up_whatever_the_retries(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two containers share one sink that fails many times: one warning when it goes down,
    one when it is back; each retry only at debug."""
    caplog.set_level(logging.DEBUG, logger="pylog.delivery")
    sink = GateSink(SinkConfig("gate", (("gate-address", "x"),)), tmp_path)
    sink.fail = "connection refused"
    sink.gate.set()
    with ThreadPoolExecutor(1) as ex:
        clogs, deliveries = [], []
        for n, cid in enumerate(("a" * 64, "b" * 64)):
            clog = ContainerLog(tmp_path / cid, StoreOptions(), ex)
            clog.append(b"".join(entry_frame(i, T0) for i in range(5 * n, 5 * n + 5)))
            clogs.append(clog)
            deliveries.append(Delivery(clog, sink, context))
        for d in deliveries:
            d.start()
        await until(lambda: all(d.retries >= 4 for d in deliveries))
        sink.fail = None
        for d in deliveries:
            assert d.task is not None
            await d.task  # the stores have no writer: each delivery ends once it sent all
    events = [getattr(r, "event", None) for r in caplog.records if r.levelno >= logging.INFO]
    assert events == ["sink_down", "sink_up"], [r.getMessage() for r in caplog.records]
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG and "retry" in r.getMessage()]
    assert len(retries) >= 6  # the retries themselves (not the first failure) at debug only
    assert sorted(sink.got) == [b"line %06d\n" % i for i in range(10)]
    for clog in clogs:
        clog.close()


class Encoded:
    """Stands for what a sink builds from a batch (fluentd's messages, ES documents)."""


class EncodingFailSink(GateSink):
    """Builds something from each batch, then fails (as a connection dropped mid-send does)."""

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.built: list[weakref.ref[Encoded]] = []

    @property
    def retry_wait(self) -> float:
        return 0.2  # long enough for the test to look during the backoff

    async def send(self, lines: list[Line], ctx: ContainerContext) -> None:
        encoded = Encoded()  # a local of the failed try, held by the error's traceback
        self.built.append(weakref.ref(encoded))
        self.sending.set()
        raise SinkError("connection reset") from OSError("reset")


async def test_a_failed_batch_is_not_kept_alive_through_the_backoff(tmp_path: Path) -> None:
    """With the sink down, each container's delivery waits between tries; what the failed try
    encoded must be freed then, or 20 containers each keep a batch's worth of messages."""
    sink = EncodingFailSink(SinkConfig("gate", (("gate-address", "x"),)), tmp_path)
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(), ex)
        clog.append(b"".join(entry_frame(i, T0) for i in range(5)))
        delivery = Delivery(clog, sink, context)
        delivery.start()
        await sink.sending.wait()
        await until(lambda: delivery.retries >= 1)
        await asyncio.sleep(0)  # the delivery is now in its backoff
        assert len(sink.built) == 1  # (still the first try's backoff)
        await asyncio.to_thread(gc.collect)  # the whole test process's heap: not on the loop
        assert sink.built[0]() is None, "the failed try's encoding is alive during the backoff"
        delivery.closing = True
        assert delivery.task is not None
        delivery.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivery.task
        clog.close()


async def test_a_sink_catching_up_reads_compressed_files_a_piece_at_a_time(
        tmp_path: Path) -> None:
    """A sink that was down while the store rotated and compressed 3 files of 4 MiB gets every
    line, in order, once it is back; the delivery never holds a whole inflated file (it did:
    gzip.decompress of each file at once, max-size bytes per container catching up)."""
    frame = len(entry_frame(0, T0))
    per_file = (4 << 20) // frame
    with ThreadPoolExecutor(1) as ex:
        clog = ContainerLog(tmp_path / CID, StoreOptions(max_size=per_file * frame, max_file=5),
                            ex)
        clog.writers = 1
        sink = GateSink(SinkConfig("gate", (("gate-address", "x"),)), tmp_path)
        total = 3 * per_file + 100
        def fill() -> None:  # the test's setup, off the loop: as a stream would, rotating
            for start in range(0, total, 5000):
                clog.append(b"".join(entry_frame(i, T0) for i in range(start,
                                                                       min(total, start + 5000))))
            ex.submit(lambda: None).result()  # the worker has compressed the rotated files

        await asyncio.to_thread(fill)
        assert len(list((tmp_path / CID).glob("*.gz"))) == 3
        delivery = Delivery(clog, sink, context)
        held: list[int] = []
        real_read = _Inflated.read

        def read(self: _Inflated, off: int, n: int) -> bytes:
            data = real_read(self, off, n)
            held.append(len(self._buf))
            return data

        _Inflated.read = read  # type: ignore[method-assign]
        try:
            sink.gate.set()
            delivery.start()
            clog.writers = 0
            clog.wake()
            assert delivery.task is not None
            await delivery.task
        finally:
            _Inflated.read = real_read  # type: ignore[method-assign]
        expected = await asyncio.to_thread(lambda: [b"line %06d\n" % i for i in range(total)])
        assert sink.got == expected
        assert held and max(held) <= (1 << 20) + 2 * READ_BYTES, max(held)
        clog.close()


@pytest.mark.parametrize("damage", [None, "members", "garbled"])
def test_inflated_reads_forward_and_back_as_the_whole_file(tmp_path: Path,
                                                          damage: str | None) -> None:
    rng = random.Random(7)
    text = b"".join(b"%d %s\n" % (i, bytes(rng.choices(b"abcdef", k=rng.randrange(80))))
                    for i in range(60000))
    blob = gzip.compress(text, 1)
    if damage == "members":  # two gzip members, as concatenated .gz files are
        blob = gzip.compress(text[:1_000_000], 1) + gzip.compress(text[1_000_000:], 1)
    elif damage == "garbled":  # the middle garbled: what came before it is read
        blob = blob[:len(blob) // 2] + b"\xff" * 64 + blob[len(blob) // 2 + 64:]
    path = tmp_path / "f.gz"
    path.write_bytes(blob)
    fd = os.open(path, os.O_RDONLY)
    try:
        inf = _Inflated(fd)
        pos = 0
        got = b""
        while True:
            data = inf.read(pos, 100_000)
            if not data:
                break
            got += data
            pos += len(data)
        if damage == "garbled":
            assert 0 < len(got) < len(text) and text.startswith(got[:len(got) - 2 ** 20])
        else:
            assert got == text
            assert inf.read(10, 5) == text[10:15]  # backwards: read again from the start
            assert inf.read(len(text) - 3, 10) == text[-3:]
            assert inf.read(len(text) + 5, 10) == b""
    finally:
        os.close(fd)
