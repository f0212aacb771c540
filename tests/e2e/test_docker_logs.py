"""`docker logs` through pylog gives exactly what Docker's own json-file driver gives.

Each test runs the same container output through json-file and through pylog in the same run
and compares what a user sees. Where two containers cannot produce the same interleaving of
stdout and stderr (dockerd reads the two pipes concurrently), streams are compared separately.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from pylog.store import WALKED

from .conftest import Containers, PylogServer, logs, touch, wait

pytestmark = pytest.mark.e2e

TS = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) ")

# Output with everything that is easy to get wrong: both streams, lines longer than dockerd's
# 16 KiB chunks, invalid UTF-8, \r, tabs, empty lines, and a final line without a newline. The
# last block is stdout only (after a pause) so that --tail is the same for both containers.
SCRIPT = r"""
echo first stdout
echo first stderr >&2
i=0; while [ $i -lt 5 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done
head -c 40000 /dev/zero | tr '\0' x; echo
head -c 70000 /dev/zero | tr '\0' y >&2; echo >&2
printf 'bad utf8: \377\376 end\n'
printf 'tab\tand\rcr\n'
printf '\n'
printf 'crlf line\r\n'
printf 'emoji \360\237\220\263\n'
echo last stderr >&2
usleep 200000
echo tail a
head -c 40000 /dev/zero | tr '\0' z; echo
echo tail b
"""
FINAL = "printf 'no newline at end'\n"
RUNNING = "echo ready; exec sleep 1000\n"


def strip_ts(data: bytes) -> bytes:
    return TS.sub(b"TS ", data)


def timestamps(data: bytes) -> list[str]:
    return [m.decode() for m in TS.findall(data)]


def json_file_view(data: bytes) -> bytes:
    """What json-file makes of bytes: invalid UTF-8 becomes U+FFFD (JSON strings are UTF-8)."""
    return data.decode("utf-8", "replace").encode()


def assert_same_logs(jf: str, pl: str) -> None:
    """Every `docker logs` variant whose output does not depend on timing, against json-file.

    One deliberate difference: json-file turns invalid UTF-8 into U+FFFD, pylog keeps the bytes
    (as the `local` driver does). The `local` driver is no reference otherwise: it drops the
    newline after lines longer than 16 KiB.
    """
    full_jf, full_pl = logs(jf), tuple(json_file_view(s) for s in logs(pl))
    assert full_pl[0] == full_jf[0], "stdout differs"
    assert full_pl[1] == full_jf[1], "stderr differs"
    assert b"x" * 40000 + b"\n" in full_pl[0], "a long line is not whole"
    assert b"y" * 70000 + b"\n" in full_pl[1], "a long stderr line is not whole"
    assert b"bad utf8: \xff\xfe end\n" in logs(pl)[0], "invalid UTF-8 was not kept intact"
    assert b"tab\tand\rcr\n" in full_pl[0] and b"crlf line\r\n" in full_pl[0]

    for n in ("0", "1", "2", "4", "5", "all"):
        assert jf_view(logs(pl, "--tail", n)) == logs(jf, "--tail", n), f"--tail {n} differs"

    ts_jf, ts_pl = logs(jf, "--timestamps"), jf_view(logs(pl, "--timestamps"))
    assert strip_ts(ts_pl[0]) == strip_ts(ts_jf[0]), "--timestamps stdout differs"
    assert strip_ts(ts_pl[1]) == strip_ts(ts_jf[1]), "--timestamps stderr differs"
    stamps_pl = timestamps(ts_pl[0])
    assert stamps_pl == sorted(stamps_pl), "stdout entries are not in timestamp order"

    # Since/Until: the k-th stdout entry's own timestamp in each container, inclusive. dockerd
    # stops at the first entry after Until in stored order, and stdout and stderr entries can be
    # stored slightly out of time order (two copiers race), so Until is compared where only
    # stdout is written (the last block), as json-file's answer elsewhere depends on that race.
    stamps_jf = timestamps(ts_jf[0])
    last = len(stamps_jf) - 1
    for k in (0, 3, 8, last - 4, last - 1):
        assert (json_file_view(logs(pl, "--since", stamps_pl[k])[0])
                == logs(jf, "--since", stamps_jf[k])[0]), f"--since the {k}th entry differs"
    for k in (last - 5, last - 3, last - 1):
        assert (json_file_view(logs(pl, "--until", stamps_pl[k])[0])
                == logs(jf, "--until", stamps_jf[k])[0]), f"--until the {k}th entry differs"
    k1, k2 = 2, last - 2
    assert (json_file_view(logs(pl, "--since", stamps_pl[k1], "--until", stamps_pl[k2])[0])
            == logs(jf, "--since", stamps_jf[k1], "--until", stamps_jf[k2])[0])
    assert (jf_view(logs(pl, "--tail", "3", "--since", stamps_pl[last - 2]))
            == logs(jf, "--tail", "3", "--since", stamps_jf[last - 2]))


def jf_view(out: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return json_file_view(out[0]), json_file_view(out[1])


def test_stopped_container_matches_json_file(pylog: PylogServer, containers: Containers) -> None:
    jf = containers.run("json-file", SCRIPT + FINAL)
    pl = containers.run(pylog.name, SCRIPT + FINAL)
    assert logs(pl)[0].endswith(b"tail b\nno newline at end")
    assert_same_logs(jf, pl)


def test_running_container_matches_json_file(pylog: PylogServer, containers: Containers) -> None:
    jf = containers.start("json-file", SCRIPT + RUNNING)
    pl = containers.start(pylog.name, SCRIPT + RUNNING)
    for cid in (jf, pl):
        follow = subprocess.Popen(["docker", "logs", "-f", cid], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        assert follow.stdout is not None
        for line in follow.stdout:  # returns once "ready" has been logged
            if line == b"ready\n":
                break
        follow.kill()
        follow.wait()
        # dockerd copies stderr in a goroutine of its own: wait until its last line has come too.
        deadline = time.monotonic() + 60
        while not logs(cid)[1].endswith(b"last stderr\n"):
            assert time.monotonic() < deadline, "stderr's last line never came"
            time.sleep(0.05)  # polling docker logs, bounded
    assert_same_logs(jf, pl)
    subprocess.run(["docker", "kill", jf, pl], check=True, capture_output=True)
    wait(jf), wait(pl)
    assert_same_logs(jf, pl)


def test_docker_logs_again_and_restart_neither_duplicate_nor_lose(
        pylog: PylogServer, containers: Containers) -> None:
    script = "echo run; echo err >&2; date +%s%N"
    jf = containers.run("json-file", script)
    pl = containers.run(pylog.name, script)
    first = logs(pl)
    # docker logs on a stopped container makes dockerd call StartLogging with a new FIFO.
    for _ in range(3):
        assert logs(pl) == first

    def stored_files() -> list[str]:
        # walked.json (store.WALKED) is there only while nobody holds the log open: dockerd's
        # ReadLogs lets go of it after `docker logs` has returned, so it (and the temp file it
        # is written through) may come and go here.
        return sorted(p.name for p in pylog.container_dir(pl).iterdir()
                      if p.name not in (WALKED, WALKED + ".tmp"))

    files_before = stored_files()
    for cid in (jf, pl):
        subprocess.run(["docker", "start", cid], check=True, capture_output=True)
        wait(cid)
    out_pl, err_pl = logs(pl)
    out_jf, err_jf = logs(jf)
    assert out_pl.startswith(first[0]) and out_pl.count(b"run\n") == 2
    assert err_pl == err_jf == b"err\nerr\n"
    assert len(out_pl.splitlines()) == len(out_jf.splitlines()) == 4
    assert stored_files() == files_before


def test_follow_ends_when_container_stops(pylog: PylogServer, containers: Containers) -> None:
    script = ('i=0; while [ $i -lt 30 ]; do echo "f $i"; echo "e $i" >&2; usleep 20000; '
              "i=$((i+1)); done; printf end")
    jf = containers.start("json-file", script)
    pl = containers.start(pylog.name, script)
    followed = {}
    for cid in (jf, pl):
        r = subprocess.run(["docker", "logs", "-f", cid], capture_output=True, timeout=120)
        assert r.returncode == 0
        followed[cid] = (r.stdout, r.stderr)
    # json-file's own `-f` ends before the final line that has no newline (a json-file race);
    # pylog's delivers everything, exactly what `docker logs` shows afterwards.
    assert followed[pl] == logs(pl) == logs(jf)
    assert followed[pl][0].endswith(b"f 29\nend")
    assert followed[jf][0] in (logs(jf)[0], logs(jf)[0][:-3])
    # On a stopped container, -f returns what is stored and ends.
    r = subprocess.run(["docker", "logs", "-f", pl], capture_output=True, timeout=60)
    assert (r.stdout, r.stderr) == logs(pl)


def test_follow_with_tail_gets_history_then_new_lines(
        pylog: PylogServer, containers: Containers) -> None:
    script = ("echo one; echo two; echo before; while [ ! -e /tmp/go ]; do usleep 10000; done; "
              "echo after 1; echo after 2 >&2; echo after 3")
    for driver in ("json-file", pylog.name):
        cid = containers.start(driver, script)
        follow = subprocess.Popen(["docker", "logs", "-f", "--tail", "1", cid],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Once "before" reaches the follower it is subscribed: only then let the container go on.
        assert follow.stdout is not None
        line = b"?"
        while line not in (b"before\n", b""):
            line = follow.stdout.readline()
        assert line == b"before\n"
        touch(cid, "/tmp/go")
        out, err = follow.communicate(timeout=60)
        assert out == b"after 1\nafter 3\n", driver
        assert err == b"after 2\n", driver


def test_100000_line_burst_nothing_lost(pylog: PylogServer, containers: Containers) -> None:
    expected = b"".join(b"%d\n" % i for i in range(1, 100001))
    for opts in ((), ("mode=non-blocking",)):
        jf = containers.run("json-file", "seq 1 100000", *opts)
        pl = containers.run(pylog.name, "seq 1 100000", *opts)
        assert logs(jf)[0] == expected, f"json-file itself lost lines with {opts}"
        out = logs(pl)[0]
        assert out.count(b"\n") == 100000, f"pylog lost lines with {opts}"
        assert out == expected
        assert logs(pl, "--tail", "3")[0] == b"99998\n99999\n100000\n"


def test_slow_reader_never_stalls_the_container(pylog: PylogServer, containers: Containers) -> None:
    """A `docker logs -f` nobody reads must not block the container or `docker stop`."""
    cid = containers.start(pylog.name, "echo start; while [ ! -e /tmp/go ]; do usleep 10000; done;"
                                       " seq 1 100000; exec sleep 1000")
    stalled = subprocess.Popen(["docker", "logs", "-f", cid], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    try:
        assert stalled.stdout is not None
        assert stalled.stdout.readline() == b"start\n"
        touch(cid, "/tmp/go")
        # Nobody reads `stalled` any more; the container still writes all 100000 lines.
        follow = subprocess.Popen(["docker", "logs", "-f", cid], stdout=subprocess.PIPE)
        assert follow.stdout is not None
        for line in follow.stdout:
            if line == b"100000\n":
                break
        follow.kill()
        follow.wait()
        stop = subprocess.run(["docker", "stop", "-t", "1", cid], capture_output=True, timeout=60)
        assert stop.returncode == 0
        assert logs(cid)[0].count(b"\n") == 100001
    finally:
        stalled.kill()
        stalled.wait()


def test_store_is_per_container_and_removed_with_the_container(
        pylog: PylogServer, containers: Containers) -> None:
    cid = containers.run(pylog.name, "echo kept")
    store = pylog.container_dir(cid)
    assert (store / "container.log").exists()
    assert oct(store.stat().st_mode & 0o777) == "0o700"
    subprocess.run(["docker", "rm", cid], check=True, capture_output=True)
    containers.ids.remove(cid)
    deadline = time.monotonic() + 30
    while store.exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the GC runs every second in this test server; poll with a deadline
    assert not store.exists(), "the store of a removed container was not deleted"


def test_abandoned_follow_frees_its_resources(pylog: PylogServer, containers: Containers) -> None:
    """Ctrl-C on `docker logs -f` of a long-running container leaves nothing open in pylog.

    dockerd notices that its reader went away only when the next entry arrives (it sits in a
    blocking decode until then), so the container here logs a tick every 0.1 s.
    """
    psutil = pytest.importorskip("psutil")
    assert pylog.proc is not None
    proc = psutil.Process(pylog.proc.pid)
    cid = containers.start(pylog.name, "echo up; while true; do echo tick; usleep 100000; done")
    logs(cid)
    base = proc.num_fds()
    for _ in range(5):
        follow = subprocess.Popen(["docker", "logs", "-f", "--tail", "1", cid],
                                  stdout=subprocess.PIPE)
        assert follow.stdout is not None
        assert follow.stdout.readline() in (b"up\n", b"tick\n")
        follow.kill()
        follow.wait()
    deadline = time.monotonic() + 30
    while proc.num_fds() > base and time.monotonic() < deadline:
        time.sleep(0.05)  # dockerd closes the connections asynchronously; poll, bounded
    assert proc.num_fds() <= base, "abandoned followers left files or sockets open"
