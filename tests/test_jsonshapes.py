"""parse=json's learned shapes (pylog.jsonshapes): a batch decoded into structs gives what the
general path gives (message, level, time, fields, fluentd's records decoded), and whatever does
not fit a shape takes the general path."""

from __future__ import annotations

import io
import json
from typing import Any

import msgpack
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pylog.entry import LogEntry
from pylog.frames import Columns
from pylog.jsonlines import MAX_DEPTH, JsonParser, Parsed, ParseRules, ParseStats
from pylog.jsonshapes import MAX_FIELDS, SKIP_AFTER_MISS
from pylog.record import ContainerContext
from pylog.shaping import LineRules, Shaper
from pylog.sinks.fluentd_encode import encode_parts
from tests.peers.fluentd_receiver import _ext_hook
from tests.test_metrics import CID

T = 1_795_000_000_123_456_789
CTX = ContainerContext(CID, "web", "img", "sha", "tag", "host")


def batch(*objs: Any) -> Columns:
    texts = [o if isinstance(o, bytes) else json.dumps(o).encode() for o in objs]
    return Columns(["stdout"] * len(texts), [T + i for i in range(len(texts))], texts,
                   tuple(len(t) + 20 for t in texts))


def records(lines: Any) -> list[dict[str, Any]]:
    blob = b"".join(encode_parts(lines, CTX, sub_second=True)[0])
    return [r for _, r in msgpack.Unpacker(io.BytesIO(blob), raw=False, ext_hook=_ext_hook)]


def learned(*objs: Any) -> JsonParser:
    p = JsonParser(ParseRules(), shapes=True)
    p.parse(batch(*objs))  # the general path, which teaches the shape its keys
    return p


def same_as_general(objs: list[Any], lesson: list[Any] | None = None) -> Any:
    """The shaped parser's result for ``objs`` (after a batch of ``lesson``, or of ``objs``,
    taught it the keys), checked against the general path's."""
    p = learned(*(objs if lesson is None else lesson))
    shaped = p.parse(batch(*objs))
    general = JsonParser(ParseRules()).parse(batch(*objs))
    if not isinstance(general, Parsed):
        assert shaped == general
        return shaped
    assert isinstance(shaped, Parsed)
    for column in ("messages", "levels", "stamps", "fields", "lines"):
        assert getattr(shaped, column) == getattr(general, column), column
    assert records(shaped) == records(general)
    return shaped


def test_a_loggers_second_batch_is_decoded_into_its_shape() -> None:
    objs = [{"time": f"t{i}", "level": "INFO", "msg": "served", "path": "/a", "n": i}
            for i in range(5)]
    x = same_as_general(objs)
    assert x.shaped and type(x.objects[0]).__name__ == "Fields"
    assert records(x)[3]["json"] == {"path": "/a", "n": 3}
    assert records(x)[3]["message"] == "served" and records(x)[3]["time"] == "t3"


KEYS = st.sampled_from(["msg", "message", "level", "severity", "time", "ts", "a", "b", "",
                        "x y", "f0", "f1"])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False,
                                                                       allow_infinity=False)
    | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=5)


# A logger's lines: message, level and time (text or numbers) and a few fields of any kind.
LOGGER_LINES = st.lists(st.fixed_dictionaries(
    {"msg": st.text(max_size=5)},
    optional={"level": st.text(max_size=3) | st.integers(0, 60),
              "time": st.text(max_size=3) | st.floats(0, 2e9) | st.integers(0, 2**53),
              "a": VALUES, "b": VALUES, "x y": VALUES}), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(KEYS, VALUES | st.text(max_size=5), max_size=6), min_size=1,
                max_size=6) | LOGGER_LINES,
       st.one_of(st.none(), st.none(), st.none(),  # mostly a shape of these very lines
                 st.lists(st.dictionaries(KEYS, st.text(max_size=3), max_size=6), min_size=1,
                          max_size=4)))
def test_shaped_or_not_a_batch_gives_what_the_general_path_gives(
        objs: list[Any], lesson: list[Any] | None) -> None:
    """Any keys (taken out or not, text or not), values of every kind (integers past 64
    bits too), a shape learned from these lines or from others: the same columns and the same
    fluentd records."""
    x = same_as_general(objs, lesson)
    event("shaped" if getattr(x, "shaped", False) else "general")


def test_numeric_levels_and_times_are_shaped_as_their_json() -> None:
    """pino writes ``"level":30`` and a time in milliseconds, zap ``"ts"`` as a float: said as
    the general path says them, from the shape."""
    pino = [{"level": 30, "time": 1795000000123 + i, "msg": "served", "pid": 7, "ok": True}
            for i in range(4)]
    zap = [{"level": "info", "ts": 1795000000.125 + i, "msg": "m", "n": i} for i in range(4)]
    nulls = [{"level": None, "time": False, "msg": "x", "k": i} for i in range(4)]
    for objs in (pino, zap, nulls):
        x = same_as_general(objs)
        assert x.shaped
    assert same_as_general(pino).levels == ["30"] * 4
    assert same_as_general(zap).stamps[1] == "1795000001.125"


@pytest.mark.parametrize("value", [2**70, -2**64, {"nested": 1}, [1, 2]])
def test_what_only_the_general_path_says_takes_it(value: Any) -> None:
    """The first such line is not text where the shape had it so (the shape learns it may
    not be); at the next, the shape is paused."""
    p = learned({"msg": "a", "level": "info"})
    for _ in range(2):
        x = p.parse(batch({"msg": value, "level": "info"}))
        assert isinstance(x, Parsed) and not x.shaped
        assert x.messages == [JsonParser(ParseRules()).parse(batch({"msg": value}))
                              .messages[0]]  # type: ignore[attr-defined]
    assert p.shapes is not None and p.shapes.skip == SKIP_AFTER_MISS


def test_an_integer_past_a_doubles_range_is_sent_as_text_as_the_general_path_does() -> None:
    """msgspec takes a 320-digit integer, orjson does not (the general path sends the line
    as text): the fluentd records are the same, and encoding does not fail."""
    huge = b'{"msg":"b","n":' + b"9" * 320 + b"}"
    objs = [{"msg": "a", "n": 1}, huge]
    shaped = learned({"msg": "a", "n": 0}).parse(batch(*objs))
    general = JsonParser(ParseRules()).parse(batch(*objs))
    assert records(shaped) == records(general)
    assert "json" not in records(shaped)[1] and records(shaped)[0]["json"] == {"n": 1}


@pytest.mark.parametrize("text", [b'{"msg":"a","n":"\\ud800"}',
                                  b'{"msg":"a","n":1,"n":2}', b'  {"msg":"a","n":3}  '])
def test_odd_lines_in_a_shape_give_what_the_general_path_gives(text: bytes) -> None:
    same_as_general([{"msg": "b", "n": 0}, text], lesson=[{"msg": "a", "n": 0}])


def test_a_new_key_takes_the_general_path_once_then_joins_the_shape() -> None:
    p = learned({"msg": "a", "k": 1})
    assert p.parse(batch({"msg": "b", "k": 2})).shaped  # type: ignore[attr-defined]
    novel = p.parse(batch({"msg": "c", "k": 3}, {"msg": "d", "new": True}))
    assert not novel.shaped and novel.fields == [{"k": 3}, {"new": True}]  # type: ignore
    again = p.parse(batch({"msg": "e", "new": False}, {"msg": "f", "k": 4}))
    assert again.shaped and again.fields == [{"new": False}, {"k": 4}]  # type: ignore


def test_text_among_the_objects_is_sent_as_text_and_pauses_the_shape() -> None:
    p = learned({"msg": "a"})
    mixed = p.parse(batch({"msg": "b"}, b"plain text"))
    assert isinstance(mixed, Parsed) and not mixed.shaped
    assert mixed.objects[1] is None and p.stats.not_object == 1
    for _ in range(SKIP_AFTER_MISS):  # the next batches do not try the shape first
        assert not p.parse(batch({"msg": "c"})).shaped  # type: ignore[attr-defined]
    assert p.parse(batch({"msg": "d"})).shaped  # type: ignore[attr-defined]


def test_a_deep_line_in_a_known_shape_is_sent_as_text_and_counted() -> None:
    p = learned({"msg": "a", "a": 1})
    deep = b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1)
    x = p.parse(batch({"msg": "b", "a": 2}, deep))
    assert isinstance(x, Parsed) and x.objects[1] is None
    assert p.stats == ParseStats(parsed=2, too_deep=1)  # the lesson's line, then one


def test_lines_of_more_keys_than_a_shape_holds_take_the_general_path() -> None:
    wide = {f"k{i}": i for i in range(MAX_FIELDS + 1)}
    p = learned(wide)
    x = p.parse(batch(wide))
    assert isinstance(x, Parsed) and not x.shaped and x.fields == [wide]


def test_only_a_sink_that_packs_structs_gets_them() -> None:
    from pylog.position import Position
    rules = LineRules(parse=ParseRules())
    for structs in (False, True):
        shaper = Shaper(Position(1, 0), 1 << 20, rules, structs=structs)
        assert shaper.parser is not None
        assert (shaper.parser.shapes is not None) == structs


def test_a_slice_of_a_shaped_batch_keeps_its_structs_and_fields() -> None:
    x = learned({"msg": "a", "n": 0}).parse(batch(*({"msg": "m", "n": i} for i in range(4))))
    assert isinstance(x, Parsed) and x.shaped
    half = x.sliced(1, 3)
    assert half.shaped and half.fields == [{"n": 1}, {"n": 2}]
    assert records(half) == records(x)[1:3]


def test_a_line_the_shape_decodes_is_what_docker_logs_keeps() -> None:
    """The store is not touched: the shaped batch's lines are the bytes as written."""
    text = b'{ "msg" : "spaced",  "n" : 1 }'
    x = learned({"msg": "a", "n": 0}).parse([LogEntry(source="stdout", time_nano=T, line=text)])
    assert isinstance(x, Parsed) and x.shaped and x.lines == [text]
    assert records(x)[0]["log"] == text.decode()


def test_a_shape_learns_which_keys_are_plain_and_which_are_always_text() -> None:
    """A flat logger's shape decodes plain values only (no depth bound needed) and takes its
    message, level and time with no check a line; a line that breaks either goes the general
    way once, and the shape learns it."""
    flat = [{"time": f"t{i}", "level": "INFO", "msg": "served", "n": i} for i in range(3)]
    p = learned(*flat)
    assert p.shapes is not None and p.shapes.shape is not None
    assert p.shapes.flat and p.shapes.shape.required == {"time", "level", "msg"}
    odd = [*flat, {"time": "t", "msg": "no level", "n": {"deep": [1]}}]
    assert not p.parse(batch(*odd)).shaped  # type: ignore[attr-defined]
    assert not p.shapes.flat and p.shapes.shape.deep == {"n"}
    assert p.shapes.shape.required == {"time", "msg"}
    for objs in (flat, odd, [{"msg": 5, "n": 1}]):
        same_as_general(objs, lesson=odd)
    shaped = p.parse(batch(*odd))
    assert shaped.shaped and shaped.levels == ["INFO"] * 3 + [None]  # type: ignore[attr-defined]


def test_a_key_two_lists_share_is_taken_once_as_the_general_path_does() -> None:
    rules = ParseRules(message_keys=("msg",), level_keys=("msg", "level"))
    objs = [{"msg": "served", "level": "INFO", "n": i} for i in range(3)]
    p = JsonParser(rules, shapes=True)
    p.parse(batch(*objs))
    shaped = p.parse(batch(*objs))
    general = JsonParser(rules).parse(batch(*objs))
    assert shaped.shaped  # type: ignore[attr-defined]
    for column in ("messages", "levels", "stamps", "fields"):
        assert getattr(shaped, column) == getattr(general, column), column
    assert shaped.levels == ["INFO"] * 3  # type: ignore[attr-defined]
