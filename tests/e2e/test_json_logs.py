"""parse=json against the real dockerd: a Go slog-style JSON line reaches every sink as fields
(each as its peer decodes it), a text line as text, and ``docker logs`` has both as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Containers, PylogServer, logs
from .test_multiline import five_sinks, printf
from .test_sink_elasticsearch import refused_run

pytestmark = pytest.mark.e2e

OBJECT = {"time": "2026-12-06T05:10:00.5Z", "level": "WARN", "msg": "slow query",
          "db": {"table": "orders", "ms": 812}, "stream": "not the record's"}
JSON_LINE = json.dumps(OBJECT)
TEXT = "plain text after it"
SCRIPT = printf([JSON_LINE, TEXT])


def test_a_json_line_is_fields_at_every_sink(pylog: PylogServer, containers: Containers,
                                             tmp_path: Path) -> None:
    with five_sinks(tmp_path) as sinks:
        fluentd, otlp, loki, rsyslog, es = (sinks.fluentd, sinks.otlp, sinks.loki,
                                            sinks.rsyslog, sinks.es)
        cid = containers.run(pylog.name, SCRIPT, "parse=json", *sinks.opts)
        assert logs(cid)[0].decode().splitlines() == [JSON_LINE, TEXT]

        first, text = fluentd.wait_for(2, cid[:12])
        assert first.record["log"] == JSON_LINE and first.record["message"] == "slow query"
        assert first.record["level"] == "WARN" and first.record["time"] == OBJECT["time"]
        assert first.record["json"] == {"db": {"table": "orders", "ms": 812},
                                        "stream": "not the record's"}
        assert first.record["source"] == "stdout"
        assert text.record["log"] == TEXT and "json" not in text.record

        es.wait_count(cid, 2)
        docs = {d["message"]: d for d in es.docs(cid)}
        assert docs["slow query"]["log"] == {"level": "WARN", "time": OBJECT["time"]}
        assert docs["slow query"]["json"]["db"]["ms"] == 812
        assert docs["slow query"]["stream"] == "stdout" and "json" not in docs[TEXT]

        records = {json.dumps(r.body, sort_keys=True): r for r in otlp.wait_for(2)}
        parsed = records[json.dumps(OBJECT, sort_keys=True)]
        assert parsed.severity_number == 13 and parsed.attributes["log.iostream"] == "stdout"
        assert json.dumps(TEXT) in records

        entries = {e.line: e for e in loki.wait_for(2)}
        assert entries[JSON_LINE].metadata["level"] == "WARN"
        assert "level" not in entries[TEXT].metadata

        got = {r.msg.decode(): r for r in rsyslog.wait_for(2, lambda r: r.app == cid[:12])}
        assert got[JSON_LINE].severity == 4 and got[TEXT].severity == 6  # warning; info


def test_a_bad_parse_option_fails_docker_run(pylog: PylogServer, containers: Containers) -> None:
    assert "parse" in refused_run(containers, pylog.name, "parse=yaml")
