"""Retention is the container's own, across pylog restarts: a stopped container's log, opened
again by the sinks' resume and by `pylog tail`/`inspect`/`ps`, is neither rotated, pruned nor
compressed by those openers (issue 13: reopened with the default options it was, and `docker
logs` then showed about half of the lines)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.peers.fluentd_receiver import ThreadedReceiver

from .conftest import Containers, cli, logs, new_server

pytestmark = pytest.mark.e2e

# Lines of 1,009 bytes are 1,034-byte frames: max-size=21m holds 21,296 of them, so 148,500
# lines fill six rotated files and leave a current file just over the default max-size (20m).
LINES = 148_500
PAD = 1000
ROTATED, MIN_CURRENT = 6, 20 << 20
SCRIPT = ("awk 'BEGIN { pad = sprintf(\"%" + str(PAD) + "s\", \"\"); gsub(/ /, \"x\", pad); "
          "for (i = 1; i <= " + str(LINES) + "; i++) printf \"%08d %s\\n\", i, pad }'")


def log_files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir()
            if p.name.startswith("container.log")}


def test_a_stopped_containers_retention_survives_a_restart_and_pylog_tail(
        docker_ready: None, busybox: str, tmp_path: Path, receiver: ThreadedReceiver) -> None:
    server = new_server(tmp_path, ["--gc-interval", "0"])
    server.start()
    c = Containers(busybox)
    try:
        cid = c.run(server.name, SCRIPT, "max-size=21m", "max-file=7", "compress=false",
                    f"fluentd-address={receiver.address}")
        assert len(receiver.wait_for(LINES, cid[:12], timeout=300)) >= LINES
        directory = server.container_dir(cid)
        before = log_files(directory)
        assert sorted(before) == ["container.log"] + [f"container.log.{i}"
                                                      for i in range(1, ROTATED + 1)], before
        assert before["container.log"] > MIN_CURRENT, before

        server.stop()
        server.start()  # resumes the container's fluentd delivery: it opens the stored log
        last = [json.loads(line) for line in cli(server, "tail", "-n", "2", cid).splitlines()]
        assert [r["message"][:8] for r in last] == [f"{LINES - 1:08d}", f"{LINES:08d}"]
        assert json.loads(cli(server, "inspect", cid))["container"]["id"] == cid
        cli(server, "ps", "--json")

        out, err = logs(cid)
        lines = out.decode().splitlines()
        assert len(lines) == LINES and not err
        assert all(line[:8] == f"{i:08d}" and len(line) == 9 + PAD
                   for i, line in enumerate(lines, 1))
        assert log_files(directory) == before, "an opener rotated, pruned or compressed"
        print(f"retention: {len(lines)} lines in docker logs after the restart, "
              f"{len(before)} files unchanged ({sum(before.values()) >> 20} MiB)")
    finally:
        c.cleanup()
        server.stop()
