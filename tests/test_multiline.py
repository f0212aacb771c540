"""Multi-line events: which lines start one, when one ends, and a delivery that joins them
without losing a line across a restart of pylog."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pylog.delivery import Delivery
from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.frames import encode_frame
from pylog.multiline import Joiner, MultilineRules, datetime_regex, multiline_rules
from pylog.options import parse_log_options
from pylog.shaping import LineRules
from tests.deliveries import container_stops, pylog_stops, running_log
from tests.test_metrics import context

SECOND = 1_000_000_000
Z = [0] * 100  # the holds, where a test does not look at them
T0 = 1_795_000_000 * SECOND

PYTHON = """Traceback (most recent call last):
  File "/app/main.py", line 12, in <module>
    main()
  File "/app/main.py", line 8, in main
    raise ValueError("bad input")
ValueError: bad input""".splitlines()

JAVA = """2026-12-06 05:10:01 ERROR Request failed
java.lang.IllegalStateException: could not serve
\tat com.example.Server.handle(Server.java:42)
\tat com.example.Server.run(Server.java:17)
Caused by: java.io.IOException: connection reset
\tat com.example.Db.query(Db.java:99)
\t... 2 more""".splitlines()


def rules(pattern: str = r"^\S", **kw: int) -> MultilineRules:
    return MultilineRules(datetime_regex("f", pattern) if "%" in pattern
                          else __import__("re").compile(pattern), **kw)


def entries(texts: list[str], source: str = "stdout", t0: int = T0,
            step: int = 1_000_000) -> list[LogEntry]:
    return [LogEntry(source=source, time_nano=t0 + i * step, line=t.encode())
            for i, t in enumerate(texts)]


def joined(events: list[LogEntry]) -> list[str]:
    return [e.line.decode() for e in events]


def test_a_python_traceback_is_one_event() -> None:
    j: Joiner[int] = Joiner(rules(r"^(INFO|ERROR|Traceback)"))
    lines = ["INFO starting"] + PYTHON + ["INFO next"]
    out = j.push(entries(lines), range(len(lines)))
    assert joined(out) == ["INFO starting", "\n".join(PYTHON)]
    assert joined(j.flush()) == ["INFO next"]


def test_a_pattern_that_also_matches_the_last_line_of_a_traceback_splits_it() -> None:
    """``ValueError: ...`` starts with no blank: a pattern of 'no leading blank' makes it an
    event of its own (what docs/multiline.md warns about)."""
    j: Joiner[int] = Joiner(rules(r"^\S"))
    out = j.push(entries(PYTHON + ["next"]), range(len(PYTHON) + 1))
    assert joined(out) == ["\n".join(PYTHON[:-1]), PYTHON[-1]]


def test_a_python_traceback_joined_by_a_datetime_start() -> None:
    j: Joiner[int] = Joiner(rules("%Y-%m-%d %H:%M:%S"))
    lines = ["2026-12-06 05:10:00 ERROR boom"] + PYTHON + ["2026-12-06 05:10:02 INFO ok"]
    out = j.push(entries(lines), Z)
    assert joined(out) == ["\n".join(lines[:-1])]
    assert out[0].time_nano == T0  # the first line's time
    assert joined(j.flush()) == ["2026-12-06 05:10:02 INFO ok"]


def test_a_java_stack_trace_with_caused_by_and_more_is_one_event() -> None:
    j: Joiner[int] = Joiner(rules("%Y-%m-%d %H:%M:%S"))
    out = j.push(entries(JAVA + ["2026-12-06 05:10:02 INFO next"]), Z)
    assert joined(out) == ["\n".join(JAVA)]
    assert j.stats.events == 1 and j.stats.joined_lines == len(JAVA)


def test_streams_are_joined_apart() -> None:
    j: Joiner[int] = Joiner(rules("%Y"))
    mixed = [*entries(["2026 out", "  more out"], "stdout"),
             *entries(["2026 err", "  more err"], "stderr", t0=T0 + 500)]
    mixed.sort(key=lambda e: e.time_nano)
    assert j.push(mixed, Z) == []
    assert sorted(joined(j.flush())) == ["2026 err\n  more err", "2026 out\n  more out"]


def test_a_line_after_the_timeout_of_silence_starts_a_new_event() -> None:
    j: Joiner[int] = Joiner(rules("%Y", timeout_ns=SECOND))
    first = entries(["2026 a", "  b"])
    late = entries(["  c"], t0=T0 + 3 * SECOND)
    out = j.push(first + late, Z)
    assert joined(out) == ["2026 a\n  b"]
    assert j.stats.timeouts == 1
    assert joined(j.flush()) == ["  c"]


def test_another_streams_lines_end_a_silent_event() -> None:
    j: Joiner[int] = Joiner(rules("%Y", timeout_ns=SECOND))
    assert j.push(entries(["2026 err", "  more"], "stderr"), Z) == []
    assert j.due(T0 + SECOND // 2) == []
    assert joined(j.due(T0 + 2 * SECOND)) == ["2026 err\n  more"]
    assert j.next_due() is None


@pytest.mark.parametrize(("kw", "cut"), [({"max_lines": 3}, [3, 3, 1]),
                                         ({"max_bytes": 20}, [3, 3, 1])])
def test_an_event_ends_at_max_lines_or_bytes(kw: dict[str, int], cut: list[int]) -> None:
    j: Joiner[int] = Joiner(rules("%Y", **kw))
    out = j.push(entries(["2026 x"] + ["  y12"] * 6), Z) + j.flush()
    assert [len(e.line.split(b"\n")) for e in out] == cut
    assert j.stats.cut == 2


def test_hold_is_where_the_oldest_open_event_was_read_from() -> None:
    j: Joiner[int] = Joiner(rules("%Y"))
    j.push(entries(["2026 a", "  b"]), [10] * 9)
    j.push(entries(["2026 e"], "stderr", t0=T0 + 5), [20] * 9)
    assert j.hold() == 10
    j.push(entries(["2026 c"], t0=T0 + 10), [30] * 9)  # ends stdout's first event
    assert j.hold() == 20  # stderr's is now the oldest open
    j.flush()
    assert j.hold() is None


@pytest.mark.parametrize("opts", [
    {"multiline-pattern": "("},
    {"multiline-datetime-format": "%Y-%Q"},
    {"multiline-pattern": "^x", "multiline-datetime-format": "%Y"},
    {"multiline-pattern": "^x", "multiline-timeout": "0s"},
    {"multiline-max-lines": "0"},
    {"multiline-max-bytes": "lots"},
])
def test_bad_multiline_options_name_the_option(opts: dict[str, str]) -> None:
    with pytest.raises(OptionError) as e:
        parse_log_options(opts)
    assert any(name in str(e.value) for name in opts)


def test_options_make_rules() -> None:
    assert multiline_rules(parse_log_options({}).values) is None
    r = multiline_rules(parse_log_options({"multiline-pattern": "^\\d", "multiline-timeout": "250ms",
                                           "multiline-max-lines": "7"}).values)
    assert r is not None and r.timeout_ns == 250_000_000 and r.max_lines == 7
    assert r.max_bytes == 1 << 20 and r.start.pattern == "^\\d"


def frames_of(texts: list[str], t0: int, source: str = "stdout") -> bytes:
    return b"".join(encode_frame(e) for e in entries(texts, source, t0))


async def test_a_delivery_joins_events_and_flushes_the_last_when_the_container_stops(
        tmp_path: Path) -> None:
    with running_log(tmp_path) as (clog, sink):
        delivery = Delivery(clog, sink, context, rules=LineRules(multiline=rules("%Y-%m-%d")))
        clog.append(frames_of(JAVA + JAVA, time.time_ns()))
        delivery.start()
        await sink.wait_for(1)
        assert sink.got == ["\n".join(JAVA).encode()]
        await container_stops(delivery, clog)
        assert sink.got == ["\n".join(JAVA).encode()] * 2
        assert delivery.lines == 2


async def test_an_open_event_is_sent_after_the_timeout_while_the_container_runs(
        tmp_path: Path) -> None:
    with running_log(tmp_path) as (clog, sink):
        delivery = Delivery(clog, sink, context,
                            rules=LineRules(multiline=rules("%Y", timeout_ns=SECOND // 5)))
        clog.append(frames_of(["2026 boom"] + PYTHON, time.time_ns()))
        delivery.start()
        await sink.wait_for(1)  # nothing else written: only the timeout can end the event
        assert sink.got == ["\n".join(["2026 boom"] + PYTHON).encode()]
        assert delivery.acked is not None and delivery.acked.offset == clog.frame_end
        await pylog_stops(delivery, clog)


async def test_a_restart_in_the_middle_of_an_event_loses_no_line(tmp_path: Path) -> None:
    """pylog stops while an event is open: the cursor stays just before its first line, so the
    next start reads it again and sends it whole (the event ended before it is not sent twice)."""
    t = time.time_ns()
    with running_log(tmp_path) as (clog, sink):
        r = rules("%Y", timeout_ns=60 * SECOND)
        delivery = Delivery(clog, sink, context, rules=LineRules(multiline=r))
        clog.append(frames_of(["2026 one", "  1a"], t))
        delivery.start()
        clog.append(frames_of(["2026 two", "  2a"], t + 10))  # ends "one"; "two" stays open
        await sink.wait_for(1)
        await pylog_stops(delivery, clog)
        assert sink.got == [b"2026 one\n  1a"]

        again = Delivery(clog, sink, context, rules=LineRules(multiline=r))  # pylog started again
        clog.append(frames_of(["  2b", "2026 three"], t + 20))
        again.start()
        await container_stops(again, clog)
        assert sink.got == [b"2026 one\n  1a", b"2026 two\n  2a\n  2b", b"2026 three"]


async def test_a_line_in_16_kib_pieces_joins_its_event_and_holds_the_cursor(
        tmp_path: Path) -> None:
    """dockerd's pieces of a long line (frame by frame, not columns) are one line of the
    event; a restart while the event is open reads it again from before its first piece."""
    from pylog.entry import PartialLogEntryMetadata
    t = time.time_ns()
    long = b"y" * 40000
    pieces = [LogEntry(source="stdout", time_nano=t + 1, line=long[i:i + 16384], partial=True,
                       partial_log_metadata=PartialLogEntryMetadata(
                           id="p", ordinal=n + 1, last=i + 16384 >= len(long)))
              for n, i in enumerate(range(0, len(long), 16384))]
    with running_log(tmp_path) as (clog, sink):
        r = rules("%Y", timeout_ns=60 * SECOND)
        first = Delivery(clog, sink, context, rules=LineRules(multiline=r))
        clog.append(frames_of(["2026 done", "2026 long"], t - 10)
                    + b"".join(encode_frame(p) for p in pieces))
        first.start()
        await sink.wait_for(1)
        await pylog_stops(first, clog)
        assert sink.got == [b"2026 done"]
        again = Delivery(clog, sink, context, rules=LineRules(multiline=r))
        clog.append(frames_of(["  tail"], t + 2))
        again.start()
        await container_stops(again, clog)
        assert sink.got == [b"2026 done", b"2026 long\n" + long + b"\n  tail"]


@pytest.mark.parametrize("pattern", [r"(?u)^\d", r"^\u00e9", r"^\N{LATIN SMALL LETTER E WITH ACUTE}"])
def test_patterns_only_text_understands_are_searched_in_text(pattern: str) -> None:
    """ASCII patterns a bytes regex refuses (they passed docker run): searched in the text."""
    r = multiline_rules(parse_log_options({"multiline-pattern": pattern}).values)
    assert r is not None
    j: Joiner[int] = Joiner(r)
    first = "\u00e9 start" if "d" not in pattern else "\u0663 start"  # é, or an Arabic 3
    out = j.push(entries([first, "  more", first]), Z)
    assert joined(out) == [f"{first}\n  more"]


@pytest.mark.parametrize("opt", ["multiline-timeout", "rate-notice-interval"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_durations_that_are_no_number_of_seconds_name_the_option(opt: str, value: str) -> None:
    base = {"multiline-pattern": "^x"} if opt.startswith("multiline") else {"rate-limit": "5"}
    with pytest.raises(OptionError) as e:
        parse_log_options({**base, opt: value})
    assert opt in str(e.value)
