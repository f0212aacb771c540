"""Multi-line events against the real dockerd: a Python traceback and a Java stack trace arrive
as one record each at every sink, ``docker logs`` keeps the lines as written, and a restart of
pylog in the middle of an event loses no line and sends none twice."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.fluentd_receiver import ThreadedReceiver
from tests.peers.loki_receiver import ThreadedLokiReceiver
from tests.peers.otlp_receiver import ThreadedOtlpReceiver
from tests.peers.rsyslog import Rsyslogd, rsyslogd_problem

from .conftest import Containers, PylogServer, logs, new_server, touch, wait
from .test_sink_elasticsearch import Osmem

pytestmark = pytest.mark.e2e

START = "multiline-datetime-format=%Y-%m-%d %H:%M:%S"
PYTHON = ["2026-12-06 05:10:00 ERROR request failed",
          "Traceback (most recent call last):",
          '  File "/app/main.py", line 12, in <module>',
          "    main()",
          '  File "/app/main.py", line 8, in main',
          '    raise ValueError("bad input")',
          "ValueError: bad input"]
JAVA = ["2026-12-06 05:10:01 ERROR could not serve",
        "java.lang.IllegalStateException: could not serve",
        "\tat com.example.Server.handle(Server.java:42)",
        "\tat com.example.Server.run(Server.java:17)",
        "Caused by: java.io.IOException: connection reset",
        "\tat com.example.Db.query(Db.java:99)",
        "\t... 2 more"]
GO = ["2026-12-06 05:10:02 panic: runtime error: index out of range [3] with length 3",
      "",
      "goroutine 1 [running]:",
      "main.main()",
      "\t/app/main.go:9 +0x1d",
      "exit status 2"]
LAST = ["2026-12-06 05:10:03 INFO done"]
ERR = ["2026-12-06 05:10:04 WARN on stderr", "  with a detail"]
EVENTS = ["\n".join(e) for e in (PYTHON, JAVA, GO, LAST)]


def printf(lines: list[str], fd: int = 1) -> str:
    return "printf '%s\\n' " + " ".join(shlex.quote(x) for x in lines) + ("" if fd == 1 else " >&2")


SCRIPT = "; ".join([printf(PYTHON + JAVA + GO + LAST), printf(ERR, 2)])


@dataclass
class FiveSinks:
    """A receiver for every sink, each decoding as its peer does, and the log-opts to reach them."""

    fluentd: ThreadedReceiver
    otlp: ThreadedOtlpReceiver
    loki: ThreadedLokiReceiver
    rsyslog: Rsyslogd
    es: Osmem

    @property
    def opts(self) -> list[str]:
        return [f"fluentd-address={self.fluentd.address}",
                f"syslog-address={self.rsyslog.address('tcp')}",
                f"elasticsearch-url={self.es.url}", f"otlp-endpoint={self.otlp.url}",
                f"loki-url={self.loki.url}"]


@contextmanager
def five_sinks(tmp_path: Path) -> Iterator[FiveSinks]:
    problem = rsyslogd_problem()
    if problem:
        pytest.fail(problem)
    sinks = FiveSinks(ThreadedReceiver(), ThreadedOtlpReceiver(), ThreadedLokiReceiver(),
                      Rsyslogd(tmp_path / "rsyslog"), Osmem())
    sinks.rsyslog.start()
    sinks.es.start()
    try:
        yield sinks
    finally:
        for peer in (sinks.fluentd, sinks.otlp, sinks.loki):
            peer.close()
        sinks.rsyslog.stop()
        sinks.es.stop()


def test_each_event_is_one_record_at_every_sink(pylog: PylogServer, containers: Containers,
                                                tmp_path: Path) -> None:
    with five_sinks(tmp_path) as sinks:
        fluentd, otlp, loki, rsyslog, es = (sinks.fluentd, sinks.otlp, sinks.loki,
                                            sinks.rsyslog, sinks.es)
        cid = containers.run(pylog.name, SCRIPT, START, *sinks.opts)
        out, err = logs(cid)
        assert out.decode().splitlines() == PYTHON + JAVA + GO + LAST  # as written
        assert err.decode().splitlines() == ERR
        want = sorted([*EVENTS, "\n".join(ERR)])
        got = {
            "fluentd": [e.record["log"] for e in fluentd.wait_for(5, cid[:12])],
            "otlp": [r.body for r in otlp.wait_for(5)],
            "loki": [e.line for e in loki.wait_for(5)],
            "syslog": [r.msg.decode() for r in rsyslog.wait_for(5, lambda r: r.app == cid[:12])],
        }
        es.wait_count(cid, 5)
        got["elasticsearch"] = [d["message"] for d in es.docs(cid, fields=["message"])]
        for sink, records in got.items():
            assert sorted(records) == want, sink
        first = next(e for e in fluentd.events(cid[:12]) if e.record["log"] == EVENTS[0])
        assert first.record["source"] == "stdout"


def test_a_restart_of_pylog_in_the_middle_of_an_event_loses_and_repeats_nothing(
        docker_ready: None, busybox: str, tmp_path: Path, receiver: ThreadedReceiver) -> None:
    problem = rsyslogd_problem()
    if problem:
        pytest.fail(problem)
    server = new_server(tmp_path, ["--gc-interval", "0"])
    server.start()
    c = Containers(busybox)
    otlp, loki = ThreadedOtlpReceiver(), ThreadedLokiReceiver()
    rsyslog = Rsyslogd(tmp_path / "rsyslog")
    rsyslog.start()
    es = Osmem().start()
    try:
        # The Java trace's first half, then (after the restart) its second half and one more
        # event; the trace is still open when pylog stops, since nothing has ended it.
        script = "; ".join([printf(PYTHON + JAVA[:3]), "while [ ! -e /tmp/go ]; do usleep 10000; done",
                            printf(JAVA[3:] + LAST)])
        cid = c.start(server.name, script, START, "multiline-timeout=1h",
                      f"fluentd-address={receiver.address}", f"otlp-endpoint={otlp.url}",
                      f"loki-url={loki.url}", f"syslog-address={rsyslog.address('tcp')}",
                      f"elasticsearch-url={es.url}")
        receiver.wait_for(1, cid[:12])  # the traceback, ended by the trace's first line
        server.stop()  # SIGTERM: pylog shuts down with the trace open
        server.start()
        touch(cid, "/tmp/go")
        assert wait(cid) == 0
        assert logs(cid)[0].decode().splitlines() == PYTHON + JAVA + LAST
        got = [e.record["log"] for e in receiver.wait_for(3, cid[:12])]
        want = [EVENTS[0], EVENTS[1], EVENTS[3]]
        assert Counter(got) == Counter(want), got
        assert got == want
        assert [r.body for r in otlp.wait_for(3)] == want, "otlp"
        assert [e.line for e in loki.wait_for(3)] == want, "loki"
        got_syslog = [r.msg.decode() for r in rsyslog.wait_for(3, lambda r: r.app == cid[:12])]
        assert got_syslog == want, "syslog"
        es.wait_count(cid, 3)
        # Exactly 3 documents: a re-sent event has the same id (the first line's time and the
        # joined bytes), so it could not have added a fourth.
        assert es.count(cid) == 3
        assert sorted(d["message"] for d in es.docs(cid, fields=["message"])) == sorted(want)
    finally:
        c.cleanup()
        server.stop()
        otlp.close()
        loki.close()
        rsyslog.stop()
        es.stop()


@pytest.mark.parametrize(("opt", "says"), [
    ("multiline-pattern=(", "multiline-pattern"),
    ("multiline-datetime-format=%Y-%Q", "multiline-datetime-format"),
    ("multiline-max-lines=0", "multiline-max-lines"),
])
def test_bad_multiline_options_fail_docker_run(pylog: PylogServer, containers: Containers,
                                               opt: str, says: str) -> None:
    from .test_sink_elasticsearch import refused_run
    assert says in refused_run(containers, pylog.name, opt)
