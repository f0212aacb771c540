"""parse=json: which lines become fields, and what each sink then sends (decoded as each peer
decodes it: json for _bulk, msgpack for fluentd, the opentelemetry-proto classes, Loki's push
proto, the syslog PRI)."""

from __future__ import annotations

import gc
import io
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from pylog.delivery import Delivery
from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.frames import encode_frame
from pylog.jsonlines import (
    MAX_DEPTH,
    JsonParser,
    Parsed,
    ParseRules,
    ParseStats,
    parse_rules,
)
from pylog.options import parse_log_options
from pylog.reassembly import Line
from pylog.record import ContainerContext
from pylog.shaping import LineRules
from pylog.sinks.es_documents import bulk_documents
from pylog.sinks.fluentd_encode import encode_parts
from pylog.sinks.loki_encode import push_bodies
from pylog.sinks.otlp_encode import protobuf_request
from pylog.sinks.syslog import Encoder
from tests.deliveries import container_stops, running_log
from tests.peers.fluentd_receiver import _ext_hook
from tests.peers.loki_receiver import decode_push
from tests.peers.otlp_receiver import plain
from tests.test_delivery import BuggySink
from tests.test_metrics import CID, context, driver_with, scrape, value

T = 1_795_000_000_123_456_789
OBJECT = {"level": "error", "msg": "payment failed", "ts": "2026-12-06T05:00:00Z",
          "order": {"id": 42, "items": [1, 2]}, "retry": True, "amount": 9.5, "note": None}
# Keys that are the record's own: they stay under `json`, never replace the record's.
HOSTILE = {"msg": "x", "stream": "fake", "container": {"id": "evil"}, "@timestamp": "1970"}


def entry(obj: Any, source: str = "stdout", t: int = T) -> LogEntry:
    text = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return LogEntry(source=source, time_nano=t, line=text)


def parse(*lines: LogEntry, rules: ParseRules = ParseRules()) -> tuple[Any, JsonParser]:
    p = JsonParser(rules)
    return p.parse(list(lines)), p


def test_an_object_becomes_fields_with_its_message_level_and_time_taken_out() -> None:
    x, p = parse(entry(OBJECT))
    assert isinstance(x, Parsed)
    assert x.messages == ["payment failed"] and x.levels == ["error"]
    assert x.stamps == ["2026-12-06T05:00:00Z"]
    assert x.fields == [{"order": {"id": 42, "items": [1, 2]}, "retry": True, "amount": 9.5,
                         "note": None}]
    assert x.whole(0) == OBJECT and x.lines[0] == json.dumps(OBJECT).encode()
    assert p.stats.parsed == 1


@pytest.mark.parametrize("mixed", [False, True])
def test_a_batch_is_parsed_the_same_whole_or_line_by_line(mixed: bool) -> None:
    """All objects (one C pass) or some text among them (line by line): the same columns."""
    objs = [{"msg": f"m{i}", "level": "info", "time": i, "k": [i]} for i in range(5)]
    objs[2] = {"message": "other key", "severity": 3, "k": {}}
    objs[3] = {}
    lines = [entry(o) for o in objs] + ([entry(b"text")] if mixed else [])
    x, p = parse(*lines)
    assert x.fields[:5] == [{"k": [0]}, {"k": [1]}, {"k": {}}, {}, {"k": [4]}]
    assert x.messages[:5] == ["m0", "m1", "other key", None, "m4"]
    assert x.levels[:5] == ["info", "info", "3", None, "info"]
    assert x.stamps[:5] == ["0", "1", None, None, "4"]
    assert p.stats.parsed == 5 and p.stats.not_object == int(mixed)
    if mixed:
        assert x.fields[5] is None and x.messages[5] is None


def test_the_keys_are_configurable_and_the_first_present_wins() -> None:
    rules = parse_rules(parse_log_options({"parse": "json", "parse-message-keys": "text,msg",
                                           "parse-level-keys": "lvl",
                                           "parse-time-keys": "when"}).values)
    assert rules is not None
    x, _ = parse(entry({"msg": "second", "text": "first", "lvl": 3, "when": 17,
                        "level": "kept"}), rules=rules)
    assert (x.messages, x.levels, x.stamps) == (["first"], ["3"], ["17"])
    assert x.fields == [{"msg": "second", "level": "kept"}]


@pytest.mark.parametrize(("text", "why"), [
    (b"plain text", "not_object"),
    (b"[1, 2, 3]", "not_object"),
    (b'"a string"', "not_object"),
    (b'{"broken": ', "not_object"),
    (b'{"a": "\\ud800"}', "not_object"),  # a lone surrogate
    (b'{"big": "' + b"x" * (64 << 10) + b'"}', "too_large"),
    (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "too_deep"),
])
def test_what_is_not_a_usable_object_is_sent_as_text_and_counted(text: bytes, why: str) -> None:
    line = entry(text)
    x, p = parse(line)
    assert x == [line]
    assert getattr(p.stats, why) == 1 and p.stats.parsed == 0


@pytest.mark.parametrize("deep", [
    b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    b'{"a":' + b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH + b"}",
])
def test_a_deep_line_among_flat_ones_is_sent_as_text(deep: bytes) -> None:
    """A batch of flat objects (the cheap path) with one too deep: only that one is text."""
    lines = [entry({"msg": "flat", "n": i}) for i in range(5)] + [entry(deep)]
    x, p = parse(*lines)
    assert isinstance(x, Parsed) and x.fields[:5] == [{"n": i} for i in range(5)]
    assert x.fields[5] is None and p.stats == ParseStats(parsed=5, too_deep=1)


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
                    max_leaves=8))
def test_an_object_the_collector_does_not_track_is_one_deep(value: Any) -> None:
    """The depth check skips objects CPython leaves untracked: that must mean no object or
    array inside (this fails if an interpreter or orjson ever untracks one that has)."""
    obj = orjson.loads(json.dumps({"k": value}))
    if not gc.is_tracked(obj):
        assert not any(isinstance(v, (dict, list)) for v in obj.values())


def test_nesting_up_to_the_limit_is_parsed() -> None:
    deep = b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH
    x, _ = parse(entry(deep))
    assert isinstance(x, Parsed)


@pytest.mark.parametrize("opts", [{"parse": "yaml"}, {"parse": "json", "parse-level-keys": ","},
                                  {"parse": "json", "parse-max-bytes": "big"}])
def test_bad_parse_options_name_the_option(opts: dict[str, str]) -> None:
    with pytest.raises(OptionError) as e:
        parse_log_options(opts)
    assert any(name in str(e.value) for name in opts)


def ctx() -> ContainerContext:
    return ContainerContext(CID, "web", "img", "sha", "tag", "host")


def batch() -> list[Any]:
    lines, _ = parse(entry(OBJECT), entry(b"not json", "stderr"), entry(HOSTILE))
    return lines  # type: ignore[no-any-return]


def test_elasticsearch_documents_carry_the_fields_apart() -> None:
    docs = bulk_documents(batch(), ctx())
    rows = [json.loads(r) for r in docs.body().splitlines()[1::2]]
    first, text, hostile = rows
    assert first["message"] == "payment failed"
    assert first["log"] == {"level": "error", "time": "2026-12-06T05:00:00Z"}
    assert first["json"]["order"] == {"id": 42, "items": [1, 2]}
    assert first["json"]["note"] is None and first["stream"] == "stdout"
    assert text["message"] == "not json" and "json" not in text and text["stream"] == "stderr"
    assert hostile["stream"] == "stdout" and hostile["container"]["id"] == CID
    assert hostile["json"] == {"stream": "fake", "container": {"id": "evil"}, "@timestamp": "1970"}
    assert hostile["@timestamp"].startswith("2026-")


def test_fluentd_records_carry_the_fields_and_dockers_keys() -> None:
    parts, ends = encode_parts(batch(), ctx(), sub_second=True)
    blob = b"".join(parts)
    assert ends[-1] == len(blob)
    entries = list(msgpack.Unpacker(io.BytesIO(blob), raw=False, ext_hook=_ext_hook))
    (_, first), (_, text), (_, hostile) = entries
    assert first["log"] == json.dumps(OBJECT) and first["message"] == "payment failed"
    assert first["level"] == "error" and first["time"] == "2026-12-06T05:00:00Z"
    assert first["json"]["order"] == {"id": 42, "items": [1, 2]}
    assert first["container_id"] == CID and first["source"] == "stdout"
    assert text["log"] == "not json" and "json" not in text and text["source"] == "stderr"
    assert hostile["json"]["container"] == {"id": "evil"} and hostile["container_id"] == CID


def test_otlp_bodies_are_maps_with_a_severity_from_the_level() -> None:
    req = ExportLogsServiceRequest.FromString(protobuf_request(batch(), ctx()))
    first, text, hostile = req.resource_logs[0].scope_logs[0].log_records
    assert plain(first.body) == OBJECT
    assert first.severity_text == "error" and first.severity_number == 17
    assert first.time_unix_nano == T
    assert plain(text.body) == "not json" and text.severity_number == 0
    assert plain(hostile.body) == HOSTILE
    assert {kv.key: plain(kv.value) for kv in hostile.attributes} == {"log.iostream": "stdout"}


@pytest.mark.parametrize("json_format", [False, True])
def test_loki_entries_keep_the_line_and_add_its_level(json_format: bool) -> None:
    ((n, body),) = push_bodies(batch(), ctx(), (), json_format, 1 << 20)
    media = "application/json" if json_format else "application/x-protobuf"
    if json_format:
        import gzip
        body = gzip.decompress(body)
    got = {e.line: e for e in decode_push(body, media)}
    assert n == 3 and got[json.dumps(OBJECT)].metadata["level"] == "error"
    assert "level" not in got["not json"].metadata
    assert got[json.dumps(OBJECT)].metadata["container_id"] == CID


@pytest.mark.parametrize("fmt", ["rfc5424", "rfc3164"])
def test_syslog_takes_the_severity_from_the_level(fmt: str) -> None:
    enc = Encoder(fmt, facility=1)
    lines, _ = parse(entry({"level": "WARNING", "msg": "w"}, "stderr"), entry({"msg": "n"}),
                     entry({"level": "chatty", "msg": "c"}, "stderr"))
    pris = [enc.encode(x, ctx(), level=lv).split(b">")[0] for x, lv in zip(lines, lines.levels)]
    assert pris == [b"<12", b"<14", b"<11"]  # warning; stdout's info; stderr's err


async def test_a_delivery_with_parse_json_sends_fields_and_counts(tmp_path: Path) -> None:
    with running_log(tmp_path) as (clog, sink):
        rules = LineRules(parse=ParseRules())
        delivery = Delivery(clog, sink, context, rules=rules)
        driver = driver_with(tmp_path, clog, delivery)
        now = time.time_ns()
        clog.append(b"".join(encode_frame(entry(x, t=now + i)) for i, x in
                             enumerate([OBJECT, b"text", OBJECT])))
        delivery.start()
        await sink.wait_for(3)
        await container_stops(delivery, clog)
        assert delivery.counts.parse == ParseStats(parsed=2, not_object=1)
        s = scrape(driver)
        labels = {"container_id": CID[:12], "sink": sink.key}
        assert value(s, "pylog_parse_lines_total", result="parsed", **labels) == 2
        assert value(s, "pylog_parse_lines_total", result="not_object", **labels) == 1
        await driver.close()


def test_a_batch_of_complete_objects_takes_the_column_path_with_the_same_records() -> None:
    """Every line with message, level and time (one C call a column) or not (line by line):
    records of the same shape, in Elasticsearch's and fluentd's bytes."""
    objs = [{"msg": f"m{i}", "level": "info", "time": i, "k": [i]} for i in range(3)]
    whole, _ = parse(*map(entry, objs))
    mixed, _ = parse(*map(entry, objs), entry(b"text"))
    es_rows = [[json.loads(r) for r in bulk_documents(b, ctx()).body().splitlines()[1::2]]
               for b in (whole, mixed)]
    assert es_rows[0] == es_rows[1][:3]
    assert es_rows[0][1]["log"] == {"level": "info", "time": "1"} and es_rows[0][1]["json"] == {
        "k": [1]}
    fl = [list(msgpack.Unpacker(io.BytesIO(b"".join(encode_parts(b, ctx(), True)[0])),
                                raw=False, ext_hook=_ext_hook)) for b in (whole, mixed)]
    assert fl[0] == fl[1][:3] and fl[0][2][1]["message"] == "m2"


@pytest.mark.parametrize("labels", [0, 14])
def test_fluentd_records_of_many_pairs_get_the_longer_map_header(labels: int) -> None:
    """Docker's keys, selected labels and the extras: past 15 pairs a msgpack map's header is
    3 bytes, not 1; every entry still unpacks whole, in order."""
    big = ContainerContext(CID, "web", "img", "sha", "tag", "host",
                           labels={f"l{i}": "v" for i in range(labels)})
    for lines in (parse(*map(entry, [OBJECT, OBJECT]))[0],
                  parse(entry(OBJECT), entry(b"text"), entry({"msg": "only"}))[0]):
        parts, ends = encode_parts(lines, big, sub_second=True)
        blob = b"".join(parts)
        got = list(msgpack.Unpacker(io.BytesIO(blob), raw=False, ext_hook=_ext_hook))
        assert len(got) == len(lines)
        width = len(parts) // len(lines)  # an entry's parts
        assert ends == [len(b"".join(parts[:width * (i + 1)])) for i in range(len(lines))]
        assert got[0][1]["json"] == {"order": {"id": 42, "items": [1, 2]}, "retry": True,
                                     "amount": 9.5, "note": None}
        assert all(("l0" in r) == bool(labels) for _, r in got)


def test_a_slice_of_a_parsed_batch_is_parsed_too() -> None:
    """What an HTTP sink sends again in halves after a 413 keeps its fields."""
    from pylog.frames import slice_of
    x = batch()
    half = slice_of(x, 1, 3)
    assert isinstance(half, Parsed) and half.fields == x.fields[1:3]
    assert half.lines == x.lines[1:3] and half.levels == x.levels[1:3]


def test_an_empty_parsed_batch_encodes_to_nothing() -> None:
    assert encode_parts(batch().sliced(0, 0), ctx(), sub_second=True) == ([], [])


def test_fluentd_extras_never_repeat_a_selected_label_or_env_name() -> None:
    named = ContainerContext(CID, "web", "img", "sha", "tag", "host",
                             labels={"level": "from-label", "pylog_level": "taken too"},
                             env={"time": "from-env"})
    parts, _ = encode_parts(parse(entry(OBJECT))[0], named, sub_second=True)
    blob = b"".join(parts)
    ((_, top),) = msgpack.Unpacker(io.BytesIO(blob), raw=False, ext_hook=_ext_hook,
                                   object_pairs_hook=list)  # every map as its list of pairs
    keys = [k for k, _ in top]
    assert len(keys) == len(set(keys)), keys
    record = dict(top)
    assert record["level"] == "from-label" and record["pylog_level"] == "taken too"
    assert record["pylog_pylog_level"] == "error"
    assert record["time"] == "from-env" and record["pylog_time"] == "2026-12-06T05:00:00Z"
    assert record["message"] == "payment failed"


def test_a_parsed_batch_over_the_buffer_limit_splits_into_whole_entries(tmp_path: Path) -> None:
    """Entries of five parts (the extras): each message holds whole entries, none lost."""
    from tests.test_sink_fluentd import sink as fluentd_sink
    lines, _ = parse(*(entry({**OBJECT, "n": i}) if i % 3 else entry(b"text %d" % i)
                       for i in range(40)))
    messages = fluentd_sink(tmp_path, 1, **{"fluentd-buffer-limit": "1k"}).messages(lines, ctx())
    assert len(messages) > 5
    got = []
    for body, option_bytes, _chunk in messages:
        _tag, entries, option = msgpack.unpackb(body + option_bytes, raw=False)
        records = list(msgpack.Unpacker(io.BytesIO(entries), raw=False, ext_hook=_ext_hook))
        assert option["size"] == len(records)
        got += [r.get("json", {}).get("n", r["log"]) for _, r in records]
    assert got == [i if i % 3 else f"text {i}" for i in range(40)]


def test_what_a_stopped_container_left_open_is_still_parsed() -> None:
    """The event multiline holds open when the container stops goes out with its fields."""
    import re

    from pylog.multiline import MultilineRules
    from pylog.position import Position
    from pylog.shaping import Shaper
    from tests.test_ratelimit import shaper_batch
    rules = LineRules(multiline=MultilineRules(re.compile("^{")), parse=ParseRules())
    sh = Shaper(Position(0, 0), 1 << 20, rules)
    first, _ = sh.take(shaper_batch([("stdout", 0, '{"msg":"a","n":1}'),
                                     ("stdout", 1, '{"msg":"b","n":2}')]))
    last = sh.end()
    assert isinstance(first, Parsed) and first.messages == ["a"]
    assert isinstance(last, Parsed) and last.messages == ["b"] and last.objects == [{"n": 2}]


async def test_a_batch_the_rules_changed_is_prepared_by_the_sink_off_the_loop(
        tmp_path: Path) -> None:
    """The delivery hands a parse=json batch to the sink's prepare in its worker, and sends
    what prepare returned."""
    prepared_on: list[int] = []

    class PreparingSink(BuggySink):
        def prepare(self, lines: Sequence[Line], ctx: ContainerContext) -> Sequence[Line]:
            prepared_on.append(threading.get_ident())
            return [line for line in lines if b"7" not in line.line]  # visibly its own

    with running_log(tmp_path) as (clog, _):
        sink = PreparingSink(tmp_path)
        delivery = Delivery(clog, sink, context, rules=LineRules(parse=ParseRules()))
        clog.append(b"".join(encode_frame(entry(b"line %d" % i)) for i in range(20)))
        delivery.start()
        await sink.wait_for(18)
        await container_stops(delivery, clog)
        assert sink.got == [b"line %d" % i for i in range(20) if i not in (7, 17)]
        assert prepared_on and threading.get_ident() not in prepared_on
