"""The five endpoints, driven with the request bodies and FIFO bytes captured from dockerd."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pylog.driver import Driver
from pylog.entry import LogEntry
from tests.helpers_records import format_rfc3339_ns

VECTORS = Path(__file__).parent / "vectors"
REQUESTS = [json.loads(line) for line in (VECTORS / "requests.jsonl").read_text().splitlines()]


def start_body(name: str) -> dict[str, Any]:
    """The StartLogging body dockerd sent for the container named ``name``."""
    for req in REQUESTS:
        if req["path"] == "/LogDriver.StartLogging" and req["body"]["Info"]["ContainerName"] == name:
            return dict(req["body"])
    raise KeyError(name)


def decode_frames(data: bytes) -> list[LogEntry]:
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append(LogEntry.FromString(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    assert pos == len(data), "ReadLogs ended mid-frame"
    return out


async def attach_and_feed(client: TestClient, driver: Driver, fifo_dir: Path, name: str,
                          data: bytes, config: dict[str, str] | None = None) -> str:
    """Do what dockerd does: make and open the FIFO, StartLogging, write, StopLogging, close."""
    body = start_body(name)
    fifo = fifo_dir / os.path.basename(body["File"])
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR)  # dockerd opens it read-write too
    body["File"] = str(fifo)
    if config is not None:
        body["Info"] = dict(body["Info"], Config=config)
    r = await client.post("/LogDriver.StartLogging", data=json.dumps(body))
    assert r.status == 200 and (await r.json()) == {"Err": ""}
    att = driver.attachments[str(fifo)]
    os.write(wfd, data)
    r = await client.post("/LogDriver.StopLogging", data=json.dumps({"File": str(fifo)}))
    assert (await r.json()) == {"Err": ""}
    os.close(wfd)
    assert att.stream is not None
    await att.stream.done.wait()
    return str(body["Info"]["ContainerID"])


async def read_logs(client: TestClient, container_id: str, **config: Any) -> list[LogEntry]:
    cfg = {"Since": "0001-01-01T00:00:00Z", "Until": "0001-01-01T00:00:00Z", "Tail": -1,
           "Follow": False, **config}
    r = await client.post("/LogDriver.ReadLogs", data=json.dumps(
        {"Info": {"ContainerID": container_id}, "Config": cfg}))
    assert r.status == 200
    return decode_frames(await r.read())


async def test_activate_and_capabilities_with_empty_bodies(env: Any) -> None:
    client, _, _ = env
    r = await client.post("/Plugin.Activate", data=b"")
    assert (await r.json()) == {"Implements": ["LogDriver"]}
    r = await client.post("/LogDriver.Capabilities", data=b"")
    assert (await r.json()) == {"Cap": {"ReadLogs": True}}


async def test_basic_vector_round_trip(env: Any) -> None:
    client, driver, fifo_dir = env
    data = (VECTORS / "basic.fifo.bin").read_bytes()
    cid = await attach_and_feed(client, driver, fifo_dir, "/basic", data)
    entries = await read_logs(client, cid)
    assert [(e.source, e.line) for e in entries] == [
        ("stderr", b"hello stderr\n"), ("stdout", b"hello stdout\n"),
        ("stdout", b"no newline at end")]
    assert not driver.attachments


async def test_longline_and_binary_vectors_keep_every_byte(env: Any) -> None:
    client, driver, fifo_dir = env
    cid = await attach_and_feed(client, driver, fifo_dir, "/longline",
                                (VECTORS / "longline.fifo.bin").read_bytes())
    lines = b"".join(e.line for e in await read_logs(client, cid))
    assert lines == b"a" * 40000 + b"\nafter\n"
    cid = await attach_and_feed(client, driver, fifo_dir, "/binary",
                                (VECTORS / "binary.fifo.bin").read_bytes())
    lines = b"".join(e.line for e in await read_logs(client, cid))
    assert lines == b"bad utf8: \xff\xfe end\ntab\tand\rcr\n\nemoji \xf0\x9f\x90\xb3\n"


async def test_corrupt_frames_are_skipped_and_counted(env: Any, caplog: Any) -> None:
    client, driver, fifo_dir = env
    data = (VECTORS / "basic.fifo.bin").read_bytes()
    first_len = 4 + struct.unpack_from(">I", data)[0]
    garbage = b"\x00\x00\x10\x00garbage that is no frame\xff" * 3
    body = start_body("/basic")
    caplog.set_level("INFO", logger="pylog.driver")
    fed = data[:first_len] + garbage + data[first_len:]
    cid = await attach_and_feed(client, driver, fifo_dir, "/basic", fed)
    entries = await read_logs(client, cid)
    assert [e.line for e in entries] == [b"hello stderr\n", b"hello stdout\n",
                                          b"no newline at end"]
    assert body["Info"]["ContainerID"] == cid
    # The operator is told: the detach message counts the corrupt region (one, however long).
    detached = [r.getMessage() for r in caplog.records if r.getMessage().startswith("detached")]
    assert len(detached) == 1
    assert f"{len(fed)} bytes stored, 0 dropped; 1 corrupt regions" in detached[0]


async def test_tail_since_until(env: Any) -> None:
    client, driver, fifo_dir = env
    cid = await attach_and_feed(client, driver, fifo_dir, "/basic",
                                (VECTORS / "basic.fifo.bin").read_bytes())
    assert [e.line for e in await read_logs(client, cid, Tail=1)] == [b"no newline at end"]
    assert await read_logs(client, cid, Tail=0) == []
    all_entries = await read_logs(client, cid)
    t1 = all_entries[1].time_nano
    since = await read_logs(client, cid, Since=format_rfc3339_ns(t1))
    assert [e.time_nano for e in since] == [e.time_nano for e in all_entries[1:]]
    until = await read_logs(client, cid, Until=format_rfc3339_ns(t1))
    assert [e.time_nano for e in until] == [e.time_nano for e in all_entries[:2]]


@pytest.mark.parametrize("config, named", [
    ({"bogus": "1"}, "bogus"), ({"max-size": "big"}, "max-size"), ({"max-file": "-1"}, "max-file"),
])
async def test_bad_options_refuse_start_logging(env: Any, config: dict[str, str],
                                                named: str) -> None:
    client, driver, fifo_dir = env
    body = start_body("/basic")
    fifo = fifo_dir / "x"
    os.mkfifo(fifo)
    body["File"] = str(fifo)
    body["Info"] = dict(body["Info"], Config=config)
    r = await client.post("/LogDriver.StartLogging", data=json.dumps(body))
    err = (await r.json())["Err"]
    assert f"'{named}'" in err
    assert not driver.attachments


async def test_malformed_requests_get_clear_errors(env: Any, tmp_path: Path) -> None:
    client, driver, fifo_dir = env
    r = await client.post("/LogDriver.StartLogging", data=b"{not json")
    assert "not valid JSON" in (await r.json())["Err"]
    body = start_body("/basic")
    r = await client.post("/LogDriver.StartLogging", data=json.dumps(body))  # dockerd's path
    assert "is not in" in (await r.json())["Err"]
    outside = tmp_path / "elsewhere"
    os.mkfifo(outside)
    r = await client.post("/LogDriver.StartLogging",
                          data=json.dumps(dict(body, File=str(outside))))
    assert "is not in" in (await r.json())["Err"]
    r = await client.post("/LogDriver.StartLogging",
                          data=json.dumps({"File": str(fifo_dir / "nofifo"), "Info": body["Info"]}))
    assert "cannot stat" in (await r.json())["Err"]
    os.mkfifo(fifo_dir / "a")
    r = await client.post("/LogDriver.StartLogging", data=json.dumps(
        {"File": str(fifo_dir / "a"), "Info": dict(body["Info"], ContainerID="../../etc")}))
    assert "64 hex" in (await r.json())["Err"]
    # An unknown FIFO is answered with success (dockerd keeps the plugin "in use" after an
    # Err) and a warning in pylog's log; a malformed body is an error.
    r = await client.post("/LogDriver.StopLogging", data=json.dumps({"File": "/nope"}))
    assert (await r.json()) == {"Err": ""}
    r = await client.post("/LogDriver.StopLogging", data=json.dumps({"File": 7}))
    assert "File must be a non-empty string" in (await r.json())["Err"]
    r = await client.post("/LogDriver.ReadLogs", data=json.dumps(
        {"Info": {"ContainerID": "f" * 64}, "Config": {"Tail": -1}}))
    assert r.status == 404 and "no logs stored" in (await r.json())["Err"]
    r = await client.post("/LogDriver.ReadLogs", data=json.dumps(
        {"Info": {"ContainerID": "f" * 64}, "Config": {"Since": "yesterday"}}))
    assert r.status == 400 and "RFC3339" in (await r.json())["Err"]
    # Still serving.
    r = await client.post("/LogDriver.Capabilities", data=b"")
    assert r.status == 200


async def test_read_logs_shows_what_dockerd_wrote_even_before_pylog_read_it(env: Any) -> None:
    """dockerd writes a line to the FIFO before `docker wait` returns; a `docker logs` that
    follows at once must show it, as json-file does, even if pylog's reader has not had a turn
    of the event loop since (here: ReadLogs is asked in the same step as the write)."""
    client, driver, fifo_dir = env
    body = start_body("/basic")
    fifo = fifo_dir / os.path.basename(body["File"])
    os.mkfifo(fifo)
    wfd = os.open(fifo, os.O_RDWR)
    body["File"] = str(fifo)
    r = await client.post("/LogDriver.StartLogging", data=json.dumps(body))
    assert (await r.json()) == {"Err": ""}
    cid = body["Info"]["ContainerID"]
    try:
        os.write(wfd, (VECTORS / "basic.fifo.bin").read_bytes())
        chunks = driver.read_logs({"ContainerID": cid}, {"Tail": -1, "Follow": False})
        data = b"".join([c async for c in chunks])
        assert [e.line for e in decode_frames(data)] == [
            b"hello stderr\n", b"hello stdout\n", b"no newline at end"]
    finally:
        r = await client.post("/LogDriver.StopLogging", data=json.dumps({"File": str(fifo)}))
        os.close(wfd)
