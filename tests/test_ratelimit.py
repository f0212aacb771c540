"""The per-container rate limit: a token bucket by the lines' own times, notices of what was
held back, the same decisions however the lines are batched, and counted in /metrics."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pylog.delivery import Delivery
from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.frames import encode_frame
from pylog.options import parse_log_options
from pylog.ratelimit import Limiter, RateRules, rate_rules
from pylog.shaping import LineRules
from tests.deliveries import container_stops, running_log
from tests.test_delivery import TIMEOUT
from tests.test_metrics import CID, context, driver_with, scrape, value

SECOND = 1_000_000_000
T0 = 1_795_000_000 * SECOND
NOTICE = re.compile(rb"pylog: rate-limit held back (\d+) (stdout|stderr) lines? from ")


def burst(n: int, per_second: int, source: str = "stdout", t0: int = T0) -> list[LogEntry]:
    step = SECOND // per_second
    return [LogEntry(source=source, time_nano=t0 + i * step, line=b"l%d" % i) for i in range(n)]


def split(out: list[LogEntry]) -> tuple[list[LogEntry], dict[str, int]]:
    """Lines sent, and the counts the notices give per stream."""
    sent, noted = [], {"stdout": 0, "stderr": 0}
    for e in out:
        m = NOTICE.match(e.line)
        if m:
            noted[m.group(2).decode()] += int(m.group(1))
        else:
            sent.append(e)
    return sent, noted


def test_lines_under_the_limit_all_pass() -> None:
    lim = Limiter(RateRules(100, 100))
    lines = burst(1000, 50)  # 20 s at 50 a second
    assert lim.take(lines) == lines and lim.flush() == [] and lim.stats.held == 0


def test_a_burst_over_the_limit_keeps_burst_plus_rate_times_duration() -> None:
    lim = Limiter(RateRules(100, 200, interval_ns=10 * SECOND))
    lines = burst(10_000, 10_000)  # 1 s at 10,000 a second
    sent, noted = split(lim.take(lines) + lim.flush())
    assert 295 <= len(sent) <= 300  # 200 at once, then 100 a second for just under 1 s
    assert noted == {"stdout": 10_000 - len(sent), "stderr": 0}
    assert lim.stats.held == 10_000 - len(sent) and lim.stats.notices == 1


def test_one_notice_per_stream_per_interval() -> None:
    lim = Limiter(RateRules(10, 10, interval_ns=SECOND))
    lines = sorted(burst(3000, 1000) + burst(3000, 1000, "stderr", T0 + 1),
                   key=lambda e: e.time_nano)  # 3 s of both streams over the limit
    out = lim.take(lines) + lim.flush()
    sent, noted = split(out)
    notices = [e for e in out if NOTICE.match(e.line)]
    assert len(notices) == 6  # 3 intervals x 2 streams
    assert {e.source for e in notices} == {"stdout", "stderr"}
    assert sum(noted.values()) == 6000 - len(sent) == lim.stats.held
    assert [e.time_nano for e in out] == sorted(e.time_nano for e in out)


@pytest.mark.parametrize("size", [1, 7, 100, 5000])
def test_the_same_lines_are_kept_however_they_are_batched(size: int) -> None:
    lines = burst(5000, 2000) + burst(2000, 100, t0=T0 + 3 * SECOND)
    whole = Limiter(RateRules(300, 50, interval_ns=SECOND))
    expected = whole.take(lines) + whole.flush()
    batched = Limiter(RateRules(300, 50, interval_ns=SECOND))
    got = []
    for i in range(0, len(lines), size):
        got += batched.take(lines[i:i + size])
    assert got + batched.flush() == expected


def test_due_sends_a_notice_once_its_interval_passed() -> None:
    lim = Limiter(RateRules(1, 1, interval_ns=SECOND))
    lim.take(burst(5, 100))
    assert lim.next_due() == T0 + SECOND + SECOND // 100
    assert lim.due(T0 + SECOND // 2) == []
    (notice,) = lim.due(T0 + 2 * SECOND)
    assert split([notice])[1]["stdout"] == 4 and lim.next_due() is None


@pytest.mark.parametrize("opts", [
    {"rate-burst": "10"},
    {"rate-limit": "0"},
    {"rate-limit": "fast"},
    {"rate-limit": "10", "rate-notice-interval": "0s"},
])
def test_bad_rate_options_name_the_option(opts: dict[str, str]) -> None:
    with pytest.raises(OptionError) as e:
        parse_log_options(opts)
    assert any(name in str(e.value) for name in opts)


def test_options_make_rules() -> None:
    assert rate_rules(parse_log_options({}).values) is None
    r = rate_rules(parse_log_options({"rate-limit": "500"}).values)
    assert r == RateRules(500.0, 500, 10 * SECOND)
    r = rate_rules(parse_log_options({"rate-limit": "5", "rate-burst": "50",
                                      "rate-notice-interval": "1m"}).values)
    assert r == RateRules(5.0, 50, 60 * SECOND)


async def test_a_delivery_sends_what_is_within_the_limit_and_counts_the_rest(
        tmp_path: Path) -> None:
    with running_log(tmp_path) as (clog, sink):
        delivery = Delivery(clog, sink, context, rules=LineRules(rate=RateRules(100, 100, SECOND)))
        driver = driver_with(tmp_path, clog, delivery)
        lines = burst(5000, 100_000, t0=time.time_ns())  # 50 ms
        clog.append(b"".join(encode_frame(e) for e in lines))
        delivery.start()
        async def noticed() -> None:  # by the clock: the container is still running
            while not any(NOTICE.match(line) for line in sink.got):
                sink.changed.clear()
                await sink.changed.wait()
        await asyncio.wait_for(noticed(), TIMEOUT)
        await container_stops(delivery, clog)
        sent = [line for line in sink.got if not NOTICE.match(line)]
        (notice,) = [line for line in sink.got if NOTICE.match(line)]
        held = int(NOTICE.match(notice).group(1))  # type: ignore[union-attr]
        assert len(sent) + held == 5000 and 100 <= len(sent) <= 106
        assert sent[:100] == [e.line for e in lines[:100]]  # the burst, then one in 1,000
        assert sent == [e.line for e in lines if e.line in set(sent)]  # in order
        assert delivery.counts.limit.held == held
        labels = {"container_id": CID[:12], "sink": sink.key}
        assert value(scrape(driver), "pylog_rate_limited_lines_total", **labels) == held
        await driver.close()


def shaper_batch(texts: list[tuple[str, int, str]], start: int = 0) -> Any:
    from pylog.reader import Batch
    entries = [LogEntry(source=s, time_nano=T0 + t, line=x.encode()) for s, t, x in texts]
    return Batch(entries, list(range(start + 1, start + len(entries) + 1)), 0)


def test_multiline_and_a_rate_limit_hold_back_the_same_events_however_batched() -> None:
    """Events end by their lines' times, not by where a batch ends: the limiter sees them in
    the same order either way."""
    from pylog.multiline import MultilineRules
    from pylog.position import Position
    from pylog.shaping import Shaper
    lines = [("stdout", 0, "S a"), ("stderr", 5 * SECOND, "S b"), ("stderr", 6 * SECOND, "S c")]
    rules = LineRules(multiline=MultilineRules(re.compile("^S")), rate=RateRules(1, 1))
    sent = []
    for cut in (3, 2, 1):
        sh = Shaper(Position(0, 0), 1 << 20, rules)
        got = list(sh.take(shaper_batch(lines[:cut]))[0])
        if cut < 3:
            got += sh.take(shaper_batch(lines[cut:], cut))[0]
        sent.append([e.line for e in got + sh.end()])
    assert sent[0] == sent[1] == sent[2] == [b"S a", b"S b", b"S c"], sent


def test_with_parse_json_the_last_event_and_notice_still_go_when_the_container_stops() -> None:
    from pylog.jsonlines import ParseRules
    from pylog.multiline import MultilineRules
    from pylog.position import Position
    from pylog.shaping import Shaper
    rules = LineRules(multiline=MultilineRules(re.compile("^S")), rate=RateRules(1, 1),
                      parse=ParseRules())
    counts = __import__("pylog.shaping", fromlist=["ShapingCounts"]).ShapingCounts()
    sh = Shaper(Position(0, 0), 1 << 20, rules, counts)
    first = list(sh.take(shaper_batch([("stdout", 0, "S a"), ("stdout", 5 * SECOND, "S b"),
                                       ("stdout", 5 * SECOND + 1, "S c")]))[0])
    rest = list(sh.end())
    texts = [e.line for e in first + rest]
    assert texts[:2] == [b"S a", b"S b"]  # "S c" is over the limit: held back, and noticed
    assert NOTICE.match(texts[2]) and int(NOTICE.match(texts[2]).group(1)) == 1  # type: ignore[union-attr]
    assert counts.limit.held == 1 and counts.parse.not_object == 2  # the notice is not counted
