"""The syslog sink end to end: containers on the real dockerd, pylog, and a private rsyslogd
these tests start; side by side with Docker's own syslog driver."""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pylog.namespaces import NS_TYPES
from pylog.options import parse_log_options
from pylog.sinks import configured_sinks
from tests.peers.rsyslog import Received, Rsyslogd, TlsFiles, rsyslogd_problem

from .conftest import Containers, PylogServer, logs, touch

pytestmark = pytest.mark.e2e

CHUNK = 16 * 1024  # dockerd's line chunks: Docker's driver sends each as a message


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    problem = rsyslogd_problem()
    if problem:
        if os.environ.get("PYLOG_REQUIRE_DOCKER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def rsyslogd(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles,
             ) -> Iterator[Rsyslogd]:
    server = Rsyslogd(tmp_path_factory.mktemp("rsyslogd"), tls_files)
    server.start()
    yield server
    server.stop()
    artifacts = os.environ.get("PYLOG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        (Path(artifacts) / "rsyslogd-e2e.log").write_text(server.diagnostics())


def app(name: str) -> Callable[[Received], bool]:
    return lambda r: r.app == name


def line_times(cid: str) -> dict[str, list[tuple[str, bytes]]]:
    """`docker logs -t` of a pylog container: per stream, (RFC 3339 nano time, line)."""
    out, err = logs(cid, "-t")
    result: dict[str, list[tuple[str, bytes]]] = {}
    for stream, data in (("stdout", out), ("stderr", err)):
        pieces = data.split(b"\n")
        if pieces[-1] == b"":
            pieces.pop()  # a final line without a newline is shown without one
        result[stream] = [(ts.decode(), text) for ts, _, text in
                          (line.partition(b" ") for line in pieces)]
    return result


def epoch(rfc3339: str) -> float:
    """Seconds since the epoch of a UTC RFC 3339 time with up to nine fractional digits."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z", rfc3339)
    assert m, rfc3339
    secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
    return secs + float("0." + (m.group(7) or "0"))


def sd_params(sd: str) -> dict[str, str]:
    assert sd.startswith("[pylog@32473 ") and sd.endswith("]"), sd
    return dict(re.findall(r'(\S+)="((?:[^"\\\]]|\\.)*)"', sd))


def option_error(containers: Containers, driver: str, *opts: str) -> str:
    r = containers.create(driver, "true", *opts, check=False)
    assert r.returncode != 0, f"docker run accepted {opts}"
    return r.stderr


# ------------------------------------------------------------------------------------- parity

SCRIPT = r"""
echo first stdout
echo first stderr >&2
i=0; while [ $i -lt 50 ]; do echo "line $i"; i=$((i+1)); done
head -c 40000 /dev/zero | tr '\0' x; echo
printf 'bad utf8: \377\376 end\n'
printf 'tab\tand\rcr and ] and " and \\ too\n'
printf '\n'
echo error line >&2
printf 'no newline at end'
"""


def _shape(msg: bytes) -> str:
    return repr(msg) if len(msg) <= 40 else f"{msg[:12]!r}...{msg[-12:]!r} ({len(msg)} bytes)"


def first_difference(ours: list[bytes], docker: list[bytes]) -> str:
    """Where two message lists first differ, short enough to read in a CI excerpt."""
    for i, (a, b) in enumerate(zip(ours, docker)):
        if a != b:
            at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return (f"message {i}: ours {_shape(a)}, docker's {_shape(b)}, first differing "
                    f"byte at {at}")
    return f"ours has {len(ours)} messages, docker's {len(docker)}"


def rsyslogd_shapes(server: Rsyslogd, *apps: str) -> str:
    """Every message of the given senders as received, one short line each."""
    return "\n".join(f"{r.app} sev={r.severity} {_shape(r.msg)}" for r in server.received()
                     if r.app in apps)


def joined(messages: list[Received]) -> list[Received]:
    """Docker's messages with the 16 KiB chunks of one long line joined back (a chunk is
    exactly 16 KiB and the line goes on in the next message of the same stream). Per stream:
    Docker copies stdout and stderr in two goroutines, so a stderr line can arrive between two
    chunks of a stdout line."""
    out: list[Received] = []
    carry: dict[int, bytes] = {}  # by severity: INFO is stdout, ERR is stderr
    for r in messages:
        if len(r.msg) == CHUNK:
            carry[r.severity] = carry.get(r.severity, b"") + r.msg
            continue
        out.append(Received(**{**r.__dict__, "msg": carry.pop(r.severity, b"") + r.msg}))
    assert not carry
    return out


def test_same_messages_as_dockers_syslog_driver(pylog: PylogServer, containers: Containers,
                                                rsyslogd: Rsyslogd) -> None:
    opts = (f"syslog-address={rsyslogd.address('tcp')}", "syslog-format=rfc5424",
            "syslog-facility=local3")
    docker = containers.run("syslog", SCRIPT, *opts)
    ours = containers.run(pylog.name, SCRIPT, *opts)
    # 50 + 5 lines on stdout, 2 on stderr; the empty line is sent by neither. Docker's driver
    # sends the 40000-byte line as three 16 KiB chunks, pylog as one message.
    d = rsyslogd.wait_for(59, app(docker[:12]))
    p = rsyslogd.wait_for(57, app(ours[:12]))
    assert len(d) == 59 and len(p) == 57
    d = joined(d)
    assert len(d) == len(p)
    for severity in (6, 3):  # INFO for stdout, ERR for stderr
        ours_msgs = [r.msg for r in p if r.severity == severity]
        docker_msgs = [r.msg for r in d if r.severity == severity]
        assert ours_msgs == docker_msgs, (severity, first_difference(ours_msgs, docker_msgs),
                                          rsyslogd_shapes(rsyslogd, docker[:12], ours[:12]))
    assert [r.severity for r in p].count(3) == 2
    assert b"x" * 40000 in [r.msg for r in p]
    assert b"bad utf8: \xff\xfe end" in [r.msg for r in p]  # raw bytes, both
    assert not [r for r in p if r.msg == b""]
    for ours_r, docker_r in zip(p, d):
        assert ours_r.facility == docker_r.facility == 19  # local3
        assert ours_r.hostname == docker_r.hostname
        assert docker_r.sd == "-"
    # Fields: APP-NAME and MSGID are the tag ({{.ID}}) for both; PROCID is the sender's PID.
    assert {(r.app, r.msgid) for r in p} == {(ours[:12], ours[:12])}
    assert {(r.app, r.msgid) for r in d} == {(docker[:12], docker[:12])}
    assert pylog.proc is not None and {r.procid for r in p} == {str(pylog.proc.pid)}
    # pylog adds the structured data: the container and its namespaces.
    host_user_ns = os.stat("/proc/self/ns/user").st_ino
    host_net_ns = os.stat("/proc/self/ns/net").st_ino
    for r in p:
        sd = sd_params(r.sd)
        assert sd["container_id"] == ours
        assert sd["container_name"] == containers_name(ours)
    last = sd_params(p[-1].sd)
    # identity=keys (the default): each namespace by its key, no inodes
    assert {k for k in last if k.startswith("ns_")} == {f"ns_{t}_key" for t in NS_TYPES}
    ctx = json.loads(pylog_cli(pylog, "inspect", ours))
    ns = ctx["pylog"]["ns"]
    assert ns["user"]["inode"] == host_user_ns and ns["net"]["inode"] != host_net_ns
    assert {t: last[f"ns_{t}_key"] for t in NS_TYPES} == \
        {t: v["key"] for t, v in ctx["pylog"]["ns"].items()}
    # ...and each line's own time (to the second in rfc5424), as `docker logs -t` shows it.
    times = line_times(ours)
    stdout_times = [ts for ts, text in times["stdout"] if text]
    assert [r.time for r in p if r.severity == 6] == [ts[:19] + "Z" for ts in stdout_times]


def pylog_cli(server: PylogServer, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "pylog", *args, "--socket", str(server.socket)],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def containers_name(cid: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Name}}", cid], capture_output=True,
                          text=True, check=True).stdout.strip().lstrip("/")


# --------------------------------------------------------------------- transports and formats

@pytest.mark.parametrize("fmt", ["rfc5424", "rfc5424micro", "rfc3164"])
@pytest.mark.parametrize("transport", ["udp", "tcp", "unix", "unixgram", "tls"])
def test_every_transport_and_format(pylog: PylogServer, containers: Containers,
                                    rsyslogd: Rsyslogd, transport: str, fmt: str) -> None:
    opts = [f"syslog-address={rsyslogd.address(transport)}", f"syslog-format={fmt}",
            "syslog-facility=user", "tag={{.Name}}"]
    if transport == "tls":
        assert rsyslogd.tls is not None
        opts.append(f"syslog-tls-ca-cert={rsyslogd.tls.ca_pem}")
    name = f"pylog-syslog-{transport}-{fmt}-{os.urandom(3).hex()}"
    cid = containers.run(pylog.name, "echo out; echo err >&2; printf 'a ] \" \\\\ b\\n'",
                         *opts, args=("--name", name))
    got = rsyslogd.wait_for(3, app(name))
    assert len(got) == 3 and {r.input for r in got} == {transport}
    times = line_times(cid)
    expected = sorted([(ts, b"<14>", text) for ts, text in times["stdout"]] +
                      [(ts, b"<11>", text) for ts, text in times["stderr"]])
    by_text = {r.msg.lstrip(b" "): r for r in got}
    assert set(by_text) == {b"out", b"err", b'a ] " \\ b'}
    pid = str(pylog.proc.pid) if pylog.proc else "?"
    host = os.uname().nodename
    for ts, pri, text in expected:
        r = by_text[text]
        if fmt == "rfc3164":
            t = time.localtime(int(epoch(ts)))  # Docker's format: local time, no year
            stamp = time.strftime("%b ", t) + f"{t.tm_mday:2d} " + time.strftime("%H:%M:%S", t)
            assert r.raw == pri + f"{stamp} {host} {name}[{pid}]: ".encode() + text
        else:
            stamp = ts[:19] + ("." + ts[20:26] if fmt == "rfc5424micro" else "") + "Z"
            sd = (f'[pylog@32473 container_id="{cid}" container_name="{name}"'
                  + "".join(f' ns_{t}="{v}"' for t, v in sorted(
                      (k[3:], v) for k, v in sd_params(r.sd).items() if k.startswith("ns_")))
                  + "]")
            msgid = name[:32]  # RFC 5424's limit (APP-NAME's is 48)
            assert r.raw == (pri + f"1 {stamp} {host} {name} {pid} {msgid} {sd} ".encode()
                             + text)
            assert r.msgid == msgid and r.sd == sd


def test_structured_data_has_the_containers_namespace_inodes(
        pylog: PylogServer, containers: Containers, rsyslogd: Rsyslogd) -> None:
    script = "while [ ! -e /tmp/go ]; do usleep 10000; done; echo up; exec sleep 1000"
    # identity=full: each namespace's inode beside its key (by default only the key)
    cid = containers.start(pylog.name, script, f"syslog-address={rsyslogd.address('udp')}",
                           "identity=full")
    deadline = time.monotonic() + 30
    while '"ns"' not in pylog_cli(pylog, "inspect", cid):  # the line comes after they are known
        assert time.monotonic() < deadline, "pylog found no namespaces in 30 s"
        time.sleep(0.02)  # polling `pylog inspect`, bounded by the deadline
    touch(cid, "/tmp/go")
    (r,) = rsyslogd.wait_for(1, app(cid[:12]))
    pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", cid], check=True,
                             capture_output=True, text=True).stdout)
    sd = sd_params(r.sd)
    assert {k: int(v) for k, v in sd.items() if k.startswith("ns_") and k[-4:] != "_key"} == {
        f"ns_{t}": os.stat(f"/proc/{pid}/ns/{t}").st_ino for t in NS_TYPES}
    keys = {t: v["key"] for t, v in json.loads(pylog_cli(pylog, "inspect", cid))["pylog"]["ns"]
            .items()}
    assert {k: v for k, v in sd.items() if k.endswith("_key")} == \
        {f"ns_{t}_key": keys[t] for t in NS_TYPES}


def test_a_burst_arrives_whole_and_in_order(pylog: PylogServer, containers: Containers,
                                            rsyslogd: Rsyslogd) -> None:
    cid = containers.run(pylog.name, "seq 1 20000", f"syslog-address={rsyslogd.address('tcp')}")
    got = rsyslogd.wait_for(20000, app(cid[:12]), timeout=120)
    assert [r.msg for r in got] == [str(i).encode() for i in range(1, 20001)]


# -------------------------------------------------------------------------------------- TLS

def sink_failure_logged(pylog: PylogServer, *opts: str, timeout: float = 60) -> str:
    """Polls pylog's log for the delivery failure of the sink these options make."""
    (config,) = [c for c in configured_sinks(parse_log_options(dict(o.split("=", 1)
                                                                    for o in opts)))
                 if c.kind == "syslog"]
    needle = f"sink {config.key}: delivery failed"
    deadline = time.monotonic() + timeout
    while True:
        for line in pylog.log_text().splitlines():
            if needle in line:
                return line
        assert time.monotonic() < deadline, f"no {needle!r} in pylog's log"
        time.sleep(0.05)  # polling the log, bounded by the deadline


def test_tls_verifies_and_skip_verify_is_a_real_boolean(
        pylog: PylogServer, containers: Containers, rsyslogd: Rsyslogd) -> None:
    tls = rsyslogd.tls
    assert tls is not None
    address = f"syslog-address={rsyslogd.address('tls')}"
    wrong = f"syslog-tls-ca-cert={tls.wrong_ca_pem}"
    # Docker's driver would skip verification here (the option is present); pylog does not.
    refused = containers.run(pylog.name, "echo must not arrive", address, wrong,
                             "syslog-tls-skip-verify=false")
    refused_default = containers.run(pylog.name, "echo must not arrive either", address, wrong,
                                     "syslog-facility=local1")
    for opts in ((address, wrong, "syslog-tls-skip-verify=false"),
                 (address, wrong, "syslog-facility=local1")):
        line = sink_failure_logged(pylog, *opts)
        assert "CERTIFICATE_VERIFY_FAILED" in line, line
    skipped = containers.run(pylog.name, "echo skipped verification", address, wrong,
                             "syslog-tls-skip-verify=true")
    verified = containers.run(pylog.name, "echo verified", address,
                              f"syslog-tls-ca-cert={tls.ca_pem}")
    mutual = containers.run(pylog.name, "echo with a client certificate",
                            f"syslog-address={rsyslogd.address('mtls')}",
                            f"syslog-tls-ca-cert={tls.ca_pem}",
                            f"syslog-tls-cert={tls.client_pem}",
                            f"syslog-tls-key={tls.client_key}")
    assert [r.msg for r in rsyslogd.wait_for(1, app(skipped[:12]))] == [b"skipped verification"]
    assert [r.msg for r in rsyslogd.wait_for(1, app(verified[:12]))] == [b"verified"]
    assert [(r.input, r.msg) for r in rsyslogd.wait_for(1, app(mutual[:12]))] == [
        ("mtls", b"with a client certificate")]
    # The refused ones are still waiting in the store: nothing of theirs got through.
    assert rsyslogd.wait_for(1, app(refused[:12]), timeout=0) == []
    assert rsyslogd.wait_for(1, app(refused_default[:12]), timeout=0) == []
    assert logs(refused)[0] == b"must not arrive\n"


# ------------------------------------------------------------------- outage and timestamps

def test_outage_loses_nothing_and_keeps_the_lines_own_time(
        pylog: PylogServer, containers: Containers, tmp_path: Path,
        tls_files: TlsFiles) -> None:
    """rsyslog is down while the container runs; when it is back every line arrives, stamped
    with the time the container wrote it (Docker's driver would stamp the send time)."""
    server = Rsyslogd(tmp_path / "rsyslogd", tls_files)
    server.start()
    try:
        opts = (f"syslog-address={server.address('tcp')}", "syslog-format=rfc5424micro")
        first = containers.run(pylog.name, "echo connected", *opts)
        server.wait_for(1, app(first[:12]))
        server.stop()
        cid = containers.run(pylog.name, "seq 1 2000", *opts)
        sink_failure_logged(pylog, *opts)
        back = time.time()
        server.start()
        got = server.wait_for(2000, app(cid[:12]), timeout=120)
        assert [r.msg for r in got] == [str(i).encode() for i in range(1, 2001)]
        written = [ts for ts, _ in line_times(cid)["stdout"]]
        assert [r.time for r in got] == [ts[:26] + "Z" for ts in written]
        assert all(epoch(r.time) < back for r in got)  # written before rsyslog was back
    finally:
        server.stop()


# --------------------------------------------------------------------------------- options

@pytest.mark.parametrize("opt", [
    "syslog-address=tls://127.0.0.1:514", "syslog-address=127.0.0.1", "syslog-address=udp://",
    "syslog-address=unix://relative", "syslog-facility=local8", "syslog-format=rfc5425",
    "syslog-tls-skip-verify=yes", "syslog-tls-ca-cert=/nonexistent/ca.pem",
])
def test_bad_options_fail_docker_run_naming_the_option(pylog: PylogServer,
                                                       containers: Containers,
                                                       opt: str) -> None:
    stderr = option_error(containers, pylog.name, "syslog-address=udp://127.0.0.1:514", opt) \
        if not opt.startswith("syslog-address") else option_error(containers, pylog.name, opt)
    assert f"'{opt.split('=')[0]}'" in stderr, stderr
