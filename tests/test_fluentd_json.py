"""The fluentd sink's messages for a parse=json batch of objects, packed in one call a message
(pylog.sinks.fluentd_json): the same entries, byte for byte, as the general encoding
(fluentd_encode.encode_parts), cut into messages within the buffer limit."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import msgpack
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pylog.frames import Columns
from pylog.jsonlines import JsonParser, Parsed, ParseRules
from pylog.sinks.fluentd_encode import encode_parts
from pylog.sinks.fluentd_json import json_messages
from tests.peers.fluentd_receiver import _ext_hook
from tests.test_jsonshapes import CTX, KEYS, VALUES

TAG = msgpack.packb("web.tag")
T = 1_795_000_000_123_456_789


def parsed(texts: list[bytes], sources: list[str] | None = None, times: list[int] | None = None,
           shapes: bool = False) -> Any:
    n = len(texts)
    cols = Columns(sources or ["stdout"] * n, times or [T + i for i in range(n)], texts,
                   tuple(len(t) + 20 for t in texts))
    parser = JsonParser(ParseRules(), shapes=shapes)
    if shapes:
        parser.parse(cols)  # the general path teaches the shape the keys
    return parser.parse(cols)


def entries_of(messages: list[tuple[Any, int]], limit: int) -> bytes:
    """The messages' entries joined, each message checked: ``[tag, bin32`` of its entries, as
    many entries as it says, within ``limit`` unless it is one entry."""
    out = []
    for body, count in messages:
        head = b"\x93" + TAG + b"\xc6"
        assert bytes(body[:len(head)]) == head
        (size,) = struct.unpack(">I", body[len(head):len(head) + 4])
        blob = bytes(body[len(head) + 4:])
        assert size == len(blob)
        assert len(list(msgpack.Unpacker(io.BytesIO(blob), ext_hook=_ext_hook))) == count
        assert count == 1 or size <= limit
        out.append(blob)
    return b"".join(out)


OBJECTS = st.lists(st.dictionaries(KEYS, VALUES, max_size=6), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(OBJECTS, st.booleans(), st.booleans(), st.sampled_from([1, 200, 1000, 1 << 20]),
       st.lists(st.sampled_from(["stdout", "stderr"]), min_size=30, max_size=30),
       st.lists(st.sampled_from([0, 2, 40, 300]), min_size=30, max_size=30),
       st.sampled_from([T, 5 * 10**9, 0]), st.sampled_from([1, 10**8, 7 * 10**8]))
def test_the_same_entries_as_the_general_encoding(objs: list[dict[str, Any]], shapes: bool,
                                                  sub_second: bool, limit: int,
                                                  sources: list[str], pads: list[int],
                                                  start: int, step: int) -> None:
    # pads: string headers of one size or several; times: in one second or across seconds,
    # now or so near 1970 that msgpack says the seconds in one byte
    texts = [json.dumps({**o, "pad": "x" * pad}).encode() for o, pad in zip(objs, pads)]
    times = [start + i * step for i in range(len(texts))]
    lines = parsed(texts, sources[:len(texts)], times, shapes=shapes)
    if not isinstance(lines, Parsed):
        return
    assert lines.complete == (None not in lines.objects and all(  # what lets the scans go
        None not in values for values in (lines.messages, lines.levels, lines.stamps)))
    try:
        expected = b"".join(encode_parts(lines, CTX, sub_second)[0])
    except OverflowError:  # an integer over 64 bits the general path cannot pack either
        return
    messages = json_messages(lines, CTX, sub_second, limit, TAG)
    event("packed in one call" if messages is not None else "left to the general encoding")
    if messages is not None:
        assert sum(c for _, c in messages) == len(texts)
        assert entries_of(messages, limit) == expected


def test_a_loggers_batch_is_packed_in_one_call_a_message() -> None:
    texts = [b'{"time":"2026-12-06T05:10:00.123Z","level":"INFO","msg":"served","n":%d}' % i
             for i in range(2000)]
    for shapes in (False, True):
        lines = parsed(texts, shapes=shapes)
        assert lines.shaped is shapes
        for sub_second in (True, False):
            messages = json_messages(lines, CTX, sub_second, 64 << 10, TAG)
            assert messages is not None and len(messages) > 3
            records = [r for _, r in msgpack.Unpacker(
                io.BytesIO(entries_of(messages, 64 << 10)), raw=False, ext_hook=_ext_hook)]
            assert [r["json"]["n"] for r in records] == list(range(2000))
            assert records[7]["message"] == "served" and records[7]["level"] == "INFO"
            assert entries_of(messages, 64 << 10) == b"".join(
                encode_parts(lines, CTX, sub_second)[0])


def test_what_it_does_not_pack_is_left_to_the_general_encoding() -> None:
    obj = b'{"level":"INFO","msg":"served","time":"t"}'
    cases = {
        "a line sent as text": parsed([obj, b"not json"]),
        "a level some lines lack": parsed([obj, b'{"msg":"served"}']),
        "a time before 1970, as EventTime": parsed([obj], times=[-5]),
    }
    for why, lines in cases.items():
        assert isinstance(lines, Parsed), why
        assert json_messages(lines, CTX, True, 1 << 20, TAG) is None, why
    # in whole seconds, msgpack says any time, as the general encoding does
    early = parsed([obj], times=[-5 * 10**9])
    assert entries_of(json_messages(early, CTX, False, 1 << 20, TAG) or [], 1 << 20) == \
        b"".join(encode_parts(early, CTX, False)[0])


def test_an_integer_msgpack_cannot_hold_is_left_to_the_general_encoding() -> None:
    lines = parsed([b'{"msg":"a","n":%d}' % 2**70, b'{"msg":"b","n":1}'], shapes=True)
    assert json_messages(lines, CTX, True, 1 << 20, TAG) is None


def test_a_message_of_more_than_65535_values_has_the_longest_array_header_cut_too() -> None:
    texts = [b'{"msg":"m","level":"I","time":"t","n":%d}' % i for i in range(7000)]
    lines = parsed(texts)
    (message,) = json_messages(lines, CTX, True, 64 << 20, TAG) or []
    assert message[1] == 7000
    assert entries_of([message], 64 << 20) == b"".join(encode_parts(lines, CTX, True)[0])
