"""The per-container rate limit against the real dockerd: a container writing far over it gets
``docker logs`` whole, each sink the lines within it plus notices that count the rest, and
/metrics the same count."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.peers.fluentd_receiver import ThreadedReceiver
from tests.peers.otlp_receiver import ThreadedOtlpReceiver

from .conftest import Containers, logs
from .test_operations import NO_NET, Ops, ops  # noqa: F401 - the fixture
from .test_sink_elasticsearch import refused_run

pytestmark = pytest.mark.e2e

NOTICE = re.compile(r"pylog: rate-limit held back (\d+) stdout lines? from ")
LINES = 20000


def split(messages: list[str]) -> tuple[list[str], int]:
    sent, held = [], 0
    for m in messages:
        found = NOTICE.match(m)
        if found:
            held += int(found.group(1))
        else:
            sent.append(m)
    return sent, held


def test_lines_over_the_limit_are_held_back_counted_and_kept(
        ops: Ops, busybox: str, receiver: ThreadedReceiver, tmp_path: Path) -> None:  # noqa: F811
    otlp = ThreadedOtlpReceiver()
    c = Containers(busybox)
    try:
        cid = c.run(ops.server.name, f"seq 1 {LINES}", "rate-limit=100", "rate-burst=300",
                    f"fluentd-address={receiver.address}", f"otlp-endpoint={otlp.url}",
                    args=NO_NET)
        assert logs(cid)[0].decode().splitlines() == [str(i) for i in range(1, LINES + 1)]
        short = cid[:12]
        held = ops.wait_value("pylog_rate_limited_lines_total", lambda v: v > 0,
                              container_id=short, sink_kind="fluentd")
        # The container stopped: each delivery ended and sent its last notice.
        ops.wait_value("pylog_spool_bytes", lambda v: v == 0, container_id=short,
                       sink_kind="fluentd")
        ops.wait_value("pylog_spool_bytes", lambda v: v == 0, container_id=short,
                       sink_kind="otlp")
        fluentd, fluentd_held = split([e.record["log"] for e in receiver.events(short)])
        otlp_sent, otlp_held = split([r.body for r in otlp.records()])
        assert 300 <= len(fluentd) < LINES // 2, len(fluentd)
        assert fluentd[:300] == [str(i) for i in range(1, 301)]  # the burst, then the rate
        assert fluentd == sorted(fluentd, key=int)
        assert len(fluentd) + fluentd_held == LINES and fluentd_held == held
        assert otlp_sent == fluentd and otlp_held == held  # every sink holds back the same
        assert ops.value("pylog_rate_limited_lines_total", container_id=short,
                         sink_kind="otlp") == held
        assert ops.value("pylog_delivered_lines_total", container_id=short,
                         sink_kind="fluentd") == len(fluentd) + sum(
            1 for e in receiver.events(short) if NOTICE.match(e.record["log"]))
    finally:
        c.cleanup()
        otlp.close()


@pytest.mark.parametrize(("opt", "says"), [("rate-burst=10", "rate-burst"),
                                           ("rate-limit=0", "rate-limit")])
def test_bad_rate_options_fail_docker_run(ops: Ops, busybox: str, opt: str,  # noqa: F811
                                          says: str) -> None:
    c = Containers(busybox)
    try:
        assert says in refused_run(c, ops.server.name, opt)
    finally:
        c.cleanup()
