"""parse=json for the fluentd sink, compiled (pylog._jsonpack): every line it takes becomes the
bytes the Python path (jsonlines' general parse, then fluentd_encode) makes of it; every line it
cannot say that way sends the batch to the Python path, which parses and counts it as before."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog import jsonpack
from pylog.frames import Columns
from pylog.jsonlines import JsonParser, Parsed, ParseRules, ParseStats
from pylog.jsonpack import PackingParser, Transcoded, transcode
from pylog.record import ContainerContext
from pylog.sinks.fluentd_encode import _packed_extras, encode_parts
from pylog.sinks.fluentd_json import transcoded_messages
from tests.test_fluentd_json import TAG, entries_of
from tests.test_jsonshapes import CID, CTX

RULES = ParseRules()
T = 1_795_000_000_123_456_789


def cols(texts: list[bytes]) -> Columns:
    return Columns(["stdout", "stderr"] * (len(texts) // 2) + ["stdout"] * (len(texts) % 2),
                   [T + i for i in range(len(texts))], texts, tuple(len(t) + 20 for t in texts))


def python_extras(texts: list[bytes], rules: ParseRules = RULES) -> tuple[list[bytes], list[int]]:
    parsed = JsonParser(rules).parse(cols(texts))
    assert isinstance(parsed, Parsed)
    return _packed_extras(parsed.objects, parsed, ("message", "level", "time", "json"))


def compiled_extras(texts: list[bytes], rules: ParseRules = RULES,
                    ) -> tuple[list[bytes], list[int]] | None:
    """transcode's pairs, a line at a time."""
    got = transcode(texts, rules)
    if got is None:
        return None
    extras, ends, counts = got
    lines = cols(texts)
    one = Transcoded(lines.sources, lines.times, texts, lines.sizes, extras, ends, counts, rules)
    return one.each(), list(counts)


def test_the_compiled_module_is_built() -> None:
    assert jsonpack.COMPILED, ("pylog._jsonpack was not built: install gcc and python3-dev "
                               "(scripts/setup-host.sh --for-tests), then scripts/venv.sh")


# What loggers write: message, level and time as text, numbers (pino) or true/false, and fields
# of every JSON kind, keys and text with escapes, non-ASCII and control characters.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
KEYS = st.sampled_from(["msg", "message", "level", "severity", "time", "ts", "a", "",
                        "x y", "é", "\"q\"", "\n"]) | TEXT
SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | TEXT
           | st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(TEXT, c, max_size=4), max_leaves=8)
TAKEN = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | TEXT
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=8).flatmap(
    lambda d: st.fixed_dictionaries({}, optional={k: TAKEN for k in (
        "msg", "message", "level", "severity", "time", "ts")}).map(lambda t: {**d, **t}))


def dumped(obj: dict[str, Any], style: int) -> bytes:
    if style == 0:
        return orjson.dumps(obj)
    if style == 1:  # \u escapes for everything past ASCII (surrogate pairs too), spaces
        return b" " + json.dumps(obj, ensure_ascii=True, indent=None).encode() + b"\t"
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(OBJECTS, st.integers(0, 2)), min_size=1, max_size=20))
def test_every_line_it_takes_is_what_the_python_path_makes(lines: list[Any]) -> None:
    texts = [dumped(obj, style) for obj, style in lines]
    got = compiled_extras(texts)
    # a taken float, object or array is said as orjson's text (Python's path): the only line
    # of these it leaves
    refused = any(isinstance(o.get(k), (float, list, dict)) for o, _ in lines for k in (
        next((k for k in keys if k in o), None) for keys in (
            RULES.message_keys, RULES.level_keys, RULES.time_keys)) if k)
    if refused:
        assert got is None
        return
    assert got is not None
    assert got == python_extras(texts)


@settings(max_examples=300, deadline=None)
@given(OBJECTS, st.data())
def test_a_line_it_takes_after_any_byte_changed_is_what_the_python_path_makes(
        obj: dict[str, Any], data: st.DataObject) -> None:
    text = bytearray(dumped(obj, data.draw(st.integers(0, 2))))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text) - 1))
        text[i] = data.draw(st.sampled_from(
            [0, 0x1F, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x80, 0xC0, 0xE0, 0xED,
             0xF4, 0xFF, ord("u"), ord("0"), ord("-"), ord("e"), ord(".")]))
    got = compiled_extras([bytes(text)])
    if got is not None:  # valid JSON: Python's parse must agree, byte for byte
        assert got == python_extras([bytes(text)])


REFUSED = {
    "not JSON": b"panic: runtime error",
    "an array": b"[1, 2]",
    "text after the object": b'{"a": 1} trailing',
    "a duplicate key": b'{"a": 1, "b": 2, "a": 3}',
    "a duplicate nested key": b'{"o": {"k": 1, "k": 2}}',
    "an integer past 64 bits": b'{"a": 18446744073709551616}',
    "a negative one past 64 bits": b'{"a": -9223372036854775809}',
    "a float taken as text": b'{"msg": 1.5}',
    "an object taken as text": b'{"level": {"n": 30}}',
    "an array taken as text": b'{"time": [1]}',
    "a lone surrogate": b'{"a": "\\ud800"}',
    "invalid UTF-8": b'{"a": "\xff"}',
    "an encoded surrogate": b'{"a": "\xed\xa0\x80"}',
    "an overlong encoding": b'{"a": "\xc0\x80"}',
    "a raw control character": b'{"a": "\x01"}',
    "a number out of a double's range": b'{"a": 1e400}',
    "a leading zero": b'{"a": 01}',
    "deeper than 32": b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}",
    "larger than parse-max-bytes": b'{"a": "' + b"x" * (64 << 10) + b'"}',
}


@pytest.mark.parametrize("why", sorted(REFUSED))
def test_a_line_it_cannot_say_leaves_the_batch_to_the_python_path(why: str) -> None:
    good = b'{"msg": "ok", "level": "info"}'
    texts = [good, REFUSED[why], good]
    assert transcode(texts, RULES) is None
    stats = ParseStats()
    parser = PackingParser(RULES, stats)
    out = parser.parse(cols(texts))
    want = JsonParser(RULES, ParseStats()).parse(cols(texts))
    assert not isinstance(out, Transcoded)
    assert encode_parts(out, CTX, True) == encode_parts(want, CTX, True)
    # and the next batches, whole objects, still go to the Python path for a while
    assert not isinstance(parser.parse(cols([good])), Transcoded)


def test_edges_it_takes_are_the_python_paths() -> None:
    texts = [
        b'{"a":127,"b":128,"c":255,"d":256,"e":65535,"f":65536,"g":4294967295,"h":4294967296,'
        b'"i":18446744073709551615,"j":-32,"k":-33,"l":-128,"m":-129,"n":-32768,"o":-32769,'
        b'"p":-2147483648,"q":-2147483649,"r":-9223372036854775808,"s":-0}',
        b'{"f":1.5,"g":-0.0,"h":1e10,"i":1E-5,"j":0.1,"k":123456789.123456789e-3}',
        b' { "msg" : null , "level":null, "x":[1,[2,{"y":"z"}],[]], "o":{} } ',
        b'{"s":"a\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00 \xc3\xa9 \xf0\x9f\x98\x80"}',
        b'{"message":"m","msg":"first","severity":"warn","ts":"t","time":"later"}',
        b'{"level":30,"time":1690000000000,"msg":"pino"}',
        b'{"level":-0,"time":true,"msg":false}', b'{"level":-1,"time":-70,"msg":-0}',
        b"{}",
        b'{"\\u006dsg":"an escaped key"}',
        b'{"a":' + b"[" * 31 + b"]" * 31 + b"}",
        b'{"long":"' + b"x" * 300 + b'","longer":"' + b"y" * 60000 + b'"}',
        b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(20)) + b"}",
        b'{"arr":[' + b",".join(b"%d" % i for i in range(70000 // 8)) + b"]}",
    ]
    for text in texts:
        assert compiled_extras([text]) == python_extras([text]), text[:80]


def test_configured_keys_are_taken_in_their_order() -> None:
    rules = ParseRules(("text", "msg"), ("lvl",), ("at", "msg"))
    texts = [b'{"msg":"m","text":"t","lvl":"warn","at":"now"}', b'{"msg":"m","lvl":null}']
    assert compiled_extras(texts, rules) == python_extras(texts, rules)


def logger_lines(n: int) -> list[bytes]:
    return [b'{"time":"2026-12-06T10:00:00.123456789Z","level":"INFO","msg":"request served",'
            b'"method":"GET","status":200,"n":%d}' % i for i in range(n)]


def test_a_loggers_batch_sends_what_the_python_path_sends() -> None:
    texts = logger_lines(500)
    stats = ParseStats()
    out = PackingParser(RULES, stats).parse(cols(texts))
    assert isinstance(out, Transcoded) and stats.parsed == 500
    want = JsonParser(RULES).parse(cols(texts))
    for sub_second in (True, False):
        assert encode_parts(out, CTX, sub_second) == encode_parts(want, CTX, sub_second)
    assert encode_parts(out.sliced(100, 200), CTX, True) == encode_parts(
        JsonParser(RULES).parse(cols(texts).sliced(100, 200)), CTX, True)


def test_a_label_with_a_pairs_name_has_the_pair_renamed_as_the_python_path_does() -> None:
    labelled = ContainerContext(CID, "web", "img", "sha", "tag", "host", labels={"message": "x"})
    texts = logger_lines(3)
    out = PackingParser(RULES).parse(cols(texts))
    assert isinstance(out, Transcoded)
    parts, ends = encode_parts(out, labelled, True)
    assert (parts, ends) == encode_parts(JsonParser(RULES).parse(cols(texts)), labelled, True)
    record = msgpack.unpackb(b"".join(parts[:5]), strict_map_key=False)[1]
    assert record["message"] == "x" and record["pylog_message"] == "request served"


def test_the_batch_is_transcoded_without_the_gil() -> None:
    """The event loop's thread runs while a worker transcodes: this thread is never kept
    waiting for as long as half the call (with the GIL held, for all of it)."""
    texts = logger_lines(400_000)
    random.Random(1).shuffle(texts)
    took: list[float] = []
    go = threading.Event()  # this thread counts from before the call starts

    def work() -> None:
        go.wait()
        start = time.perf_counter()
        transcode(texts, RULES)
        took.append(time.perf_counter() - start)

    worker = threading.Thread(target=work)
    worker.start()
    last, longest = time.perf_counter(), 0.0
    go.set()
    while worker.is_alive():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    assert longest < took[0] / 2, (longest, took)


@pytest.mark.parametrize("limit", [1, 5000, 1 << 20])
def test_a_batchs_messages_hold_the_python_paths_entries_within_the_limit(limit: int) -> None:
    texts = [b'{"msg":"m%d","level":"info","time":"t","n":%d}' % (i, i) if i % 3 else
             b'{"message":"no level %d","ts":"t"}' % i for i in range(300)]
    out = PackingParser(RULES).parse(cols(texts))
    assert isinstance(out, Transcoded) and set(out.counts) == {3, 4}
    want = JsonParser(RULES).parse(cols(texts))
    for sub_second in (True, False):
        messages = transcoded_messages(out, CTX, sub_second, limit, TAG)
        assert messages is not None
        assert entries_of(messages, limit) == b"".join(encode_parts(want, CTX, sub_second)[0])
        assert len(messages) > 1 if limit < 1 << 20 else len(messages) == 1


def test_a_time_eventtime_cannot_hold_leaves_the_messages_to_the_python_path() -> None:
    texts = logger_lines(3)
    lines = cols(texts)
    lines.times[1] = -5  # before 1970: the Python path clamps it
    out = PackingParser(RULES).parse(lines)
    assert isinstance(out, Transcoded)
    assert transcoded_messages(out, CTX, True, 1 << 20, TAG) is None
    whole = transcoded_messages(out, CTX, False, 1 << 20, TAG)  # whole seconds: -1 is said
    assert whole is not None
    want = JsonParser(RULES).parse(lines)
    assert entries_of(whole, 1 << 20) == b"".join(encode_parts(want, CTX, False)[0])
