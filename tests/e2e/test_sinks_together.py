"""Three sinks at once: fluentd, syslog and Elasticsearch each get every line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.fluentd_receiver import ThreadedReceiver
from tests.peers.rsyslog import Rsyslogd, rsyslogd_problem

from .conftest import Containers, PylogServer, logs
from .test_sink_elasticsearch import Osmem

pytestmark = pytest.mark.e2e

LINES = 20000


def test_three_sinks_each_get_every_line(pylog: PylogServer, containers: Containers,
                                         tmp_path: Path) -> None:
    problem = rsyslogd_problem()
    if problem:
        pytest.fail(problem)
    fluentd = ThreadedReceiver()
    rsyslog = Rsyslogd(tmp_path / "rsyslog")
    rsyslog.start()
    es = Osmem().start()
    try:
        cid = containers.run(pylog.name, f"seq 1 {LINES}",
                             f"fluentd-address={fluentd.address}",
                             f"syslog-address={rsyslog.address('tcp')}",
                             f"elasticsearch-url={es.url}")
        expected = [str(i) for i in range(1, LINES + 1)]
        assert logs(cid)[0].decode().splitlines() == expected
        got_fluentd = [e.record["log"] for e in fluentd.wait_for(LINES, cid[:12])]
        got_syslog = [r.msg.decode() for r in rsyslog.wait_for(
            LINES, lambda r: r.app == cid[:12], timeout=120)]
        es.wait_count(cid, LINES)
        assert got_fluentd == expected, "fluentd"
        assert got_syslog == expected, "syslog"
        # Exactly LINES documents (ids are per line, so a repeat would not add one), and the
        # ones a search can return (osmem returns at most 10,000) are the right lines.
        assert es.count(cid) == LINES, "elasticsearch"
        got_es = {d["message"] for d in es.docs(cid, fields=["message"])}
        assert len(got_es) == 10000 and got_es <= set(expected)
    finally:
        fluentd.close()
        rsyslog.stop()
        es.stop()
