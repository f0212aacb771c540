"""The syslog sink: options, formatting, escaping, framing, truncation, connections — and every
transport and format against a private rsyslogd that these tests start."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylog.entry import LogEntry
from pylog.errors import OptionError
from pylog.frames import Columns
from pylog.options import parse_log_options
from pylog.record import ContainerContext, NamespaceView
from pylog.sinks import SINK_TYPES, SinkError, configured_sinks
from pylog.sinks.syslog import (
    DATAGRAM_MSG_MAX,
    Encoder,
    SyslogSink,
    cut_line,
    lf_frame,
    octet_frame,
    sd_escape,
    structured_data,
)
from tests.peers.rsyslog import Received, Rsyslogd, TlsFiles, rsyslogd_problem

T0 = 1763787716_585015352  # 2025-11-22T05:01:56.585015352Z
CID = "3f2a1b9c0d1e" + "ab" * 26
NS = {"net": NamespaceView("net", 4026532260, 5064, False, ("db",), "a1" * 10),
      "cgroup": NamespaceView("cgroup", 4026531835, 5, True, key="c5" * 10),
      "pid": NamespaceView("pid", 4026532187, 1077, False)}  # no key: saved by an older pylog
SD = (f'[pylog@32473 container_id="{CID}" container_name="web" '
      f'ns_cgroup_key="{"c5" * 10}" ns_net_key="{"a1" * 10}" ns_pid="4026532187"]')
SD_FULL = (f'[pylog@32473 container_id="{CID}" container_name="web" ns_cgroup="4026531835" '
           f'ns_cgroup_key="{"c5" * 10}" ns_net="4026532260" ns_net_key="{"a1" * 10}" '
           f'ns_pid="4026532187"]')
PID = os.getpid()


def context(tag: str = "3f2a1b9c0d1e", name: str = "web", host: str = "vm",
            namespaces: dict[str, NamespaceView] | None = NS,
            identity: str = "keys") -> ContainerContext:
    return ContainerContext(CID, name, "img:1", "sha256:abc", tag, host, namespaces=namespaces,
                            identity=identity)


def entry(text: bytes | str, source: str = "stdout", t: int = T0) -> LogEntry:
    return LogEntry(source=source, time_nano=t,
                    line=text.encode() if isinstance(text, str) else text)


def sink(address: str = "udp://127.0.0.1:514", **opts: str) -> SyslogSink:
    options = {"syslog-address": address, **{k.replace("_", "-"): v for k, v in opts.items()}}
    configs = [c for c in configured_sinks(parse_log_options(options)) if c.kind == "syslog"]
    assert len(configs) == 1
    s = SINK_TYPES["syslog"](configs[0], Path("/nonexistent"))  # a syslog sink keeps no state
    assert isinstance(s, SyslogSink)
    return s


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# ------------------------------------------------------------------------------------ options

def test_defaults_and_off_without_an_address() -> None:
    opts = parse_log_options({})
    assert not [c for c in configured_sinks(opts) if c.kind == "syslog"]
    s = sink("udp://192.0.2.1")
    assert s.address == ("udp", "192.0.2.1", 514)  # Docker's default port
    assert s.config["syslog-facility"] == 3  # daemon
    assert s.encoder.format == "rfc5424"
    assert s.config["syslog-tls-skip-verify"] is False
    assert s.config["syslog-tls-ca-cert"] is None


@pytest.mark.parametrize("value,expected", [
    ("udp://192.0.2.1:5514", ("udp", "192.0.2.1", 5514)),
    ("tcp://logs.example.com", ("tcp", "logs.example.com", 514)),
    ("tcp+tls://logs.example.com:6514", ("tcp+tls", "logs.example.com", 6514)),
    ("TCP://h:1", ("tcp", "h", 1)),
    ("udp://[2001:db8::1]:514", ("udp", "2001:db8::1", 514)),
    ("unix:///run/syslog.sock", ("unix", "", "/run/syslog.sock")),
    ("unixgram:///dev/log", ("unixgram", "", "/dev/log")),
])
def test_addresses(value: str, expected: tuple[str, str, object]) -> None:
    assert parse_log_options({"syslog-address": value})["syslog-address"] == expected


@pytest.mark.parametrize("value", [
    "192.0.2.1:514", "tls://h:514", "http://h", "udp://", "udp://h:99999", "udp://h:0",
    "udp://h:port", "tcp://h:514/path", "unix://relative/path", "unixgram://", "unix:",
    "", "udp://h:514?x=1",
])
def test_bad_addresses_fail_naming_the_option(value: str) -> None:
    with pytest.raises(OptionError, match="'syslog-address'"):
        parse_log_options({"syslog-address": value})


@pytest.mark.parametrize("value,expected", [
    ("kern", 0), ("user", 1), ("mail", 2), ("daemon", 3), ("auth", 4), ("syslog", 5),
    ("lpr", 6), ("news", 7), ("uucp", 8), ("cron", 9), ("authpriv", 10), ("ftp", 11),
    ("local0", 16), ("local7", 23), ("0", 0), ("23", 23),
])
def test_facilities_as_docker_accepts_them(value: str, expected: int) -> None:
    assert parse_log_options({"syslog-facility": value})["syslog-facility"] == expected


@pytest.mark.parametrize("value", ["local8", "24", "-1", "", "DAEMON", "security", "3.0"])
def test_bad_facilities(value: str) -> None:
    with pytest.raises(OptionError, match="'syslog-facility'"):
        parse_log_options({"syslog-facility": value})


@pytest.mark.parametrize("value", ["rfc5424", "rfc5424micro", "rfc3164"])
def test_formats(value: str) -> None:
    assert parse_log_options({"syslog-format": value})["syslog-format"] == value


@pytest.mark.parametrize("value", ["", "RFC5424", "rfc5425", "unix", "json"])
def test_bad_formats(value: str) -> None:
    with pytest.raises(OptionError, match="'syslog-format'"):
        parse_log_options({"syslog-format": value})


@pytest.mark.parametrize("value,expected", [("true", True), ("1", True), ("false", False),
                                            ("0", False), ("False", False)])
def test_skip_verify_is_a_real_boolean(value: str, expected: bool) -> None:
    """Docker honours syslog-tls-skip-verify by its mere presence, so `=false` skips the
    check there; here false verifies."""
    assert parse_log_options({"syslog-tls-skip-verify": value})[
        "syslog-tls-skip-verify"] is expected
    s = sink("tcp+tls://h", syslog_tls_skip_verify=value)
    import ssl
    ctx = s.tls_context()
    assert (ctx.verify_mode == ssl.CERT_NONE) is expected
    assert ctx.check_hostname is not expected


@pytest.mark.parametrize("value", ["", "yes", "no", "on"])
def test_bad_skip_verify(value: str) -> None:
    with pytest.raises(OptionError, match="'syslog-tls-skip-verify'"):
        parse_log_options({"syslog-tls-skip-verify": value})


def test_tls_verifies_by_default() -> None:
    import ssl
    ctx = sink("tcp+tls://h").tls_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    problem = rsyslogd_problem()
    if problem:
        if os.environ.get("PYLOG_REQUIRE_DOCKER") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return TlsFiles.make(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("option", ["syslog-tls-ca-cert", "syslog-tls-cert", "syslog-tls-key"])
def test_tls_files_must_exist_and_hold_pem(option: str, tmp_path: Path,
                                           tls_files: TlsFiles) -> None:
    good = tls_files.client_key if option == "syslog-tls-key" else tls_files.ca_pem
    assert parse_log_options({option: str(good)})[option] == str(good)
    with pytest.raises(OptionError, match=f"'{option}'.*cannot read"):
        parse_log_options({option: str(tmp_path / "missing.pem")})
    secret = tmp_path / "not-pem"
    secret.write_text("hunter2 is the password\n")
    with pytest.raises(OptionError, match=f"'{option}'.*no PEM") as e:
        parse_log_options({option: str(secret)})
    assert "hunter2" not in str(e.value)  # a file's content is never shown
    with pytest.raises(OptionError, match=f"'{option}'"):
        parse_log_options({option: ""})


def test_a_key_alone_is_not_accepted_when_connecting(tls_files: TlsFiles) -> None:
    s = sink("tcp+tls://h", syslog_tls_key=str(tls_files.client_key))
    with pytest.raises(SinkError, match="syslog-tls-key is set but syslog-tls-cert is not"):
        s.tls_context()


def test_a_cert_without_its_key_fails_without_showing_the_key(tls_files: TlsFiles) -> None:
    s = sink("tcp+tls://h", syslog_tls_cert=str(tls_files.client_pem),
             syslog_tls_key=str(tls_files.wrong_ca_key))  # not the cert's key
    with pytest.raises(SinkError, match="cannot load the client certificate") as e:
        s.tls_context()
    assert "PRIVATE" not in str(e.value)


def test_sink_options_are_known_options() -> None:
    config = {"syslog-address": "tcp://h", "syslog-facility": "local3",
              "syslog-format": "rfc3164", "syslog-tls-skip-verify": "true"}
    opts = parse_log_options(config)
    assert opts.given == frozenset(config)
    (c,) = [c for c in configured_sinks(opts) if c.kind == "syslog"]
    assert c.key.startswith("syslog-")
    assert dict(c.values)["syslog-facility"] == 19


# --------------------------------------------------------------------------------- formatting

def test_rfc5424_uses_the_lines_time_tag_severity_and_structured_data() -> None:
    s = sink()
    out = s.messages([entry("hello"), entry("oops", "stderr", T0 + 10**9)], context())
    assert out == [
        f"<30>1 2025-11-22T05:01:56Z vm 3f2a1b9c0d1e {PID} 3f2a1b9c0d1e {SD} hello".encode(),
        f"<27>1 2025-11-22T05:01:57Z vm 3f2a1b9c0d1e {PID} 3f2a1b9c0d1e {SD} oops".encode(),
    ]


def test_rfc5424micro_has_microseconds_cut_not_rounded() -> None:
    s = sink(syslog_format="rfc5424micro")
    out = s.messages([entry("a"), entry("b", t=T0 - 585015352 + 999_999_999),
                      entry("c", t=T0 - 585015352 + 1_000)], context())
    assert [m.split(b" ")[1] for m in out] == [b"2025-11-22T05:01:56.585015Z",
                                               b"2025-11-22T05:01:56.999999Z",
                                               b"2025-11-22T05:01:56.000001Z"]


def test_rfc3164_as_docker_formats_it(utc: None) -> None:
    s = sink(syslog_format="rfc3164", syslog_facility="local7")
    out = s.messages([entry("hello"), entry("oops", "stderr", T0 - 20 * 86400 * 10**9)], context())
    assert out == [f"<190>Nov 22 05:01:56 vm 3f2a1b9c0d1e[{PID}]: hello".encode(),
                   f"<187>Nov  2 05:01:56 vm 3f2a1b9c0d1e[{PID}]: oops".encode()]


def test_rfc3164_is_in_local_time_as_docker_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "PYL-2")  # two hours east of UTC, no tz database needed
    time.tzset()
    try:
        (m,) = sink(syslog_format="rfc3164").messages([entry("x")], context())
        assert m.startswith(b"<30>Nov 22 07:01:56 vm ")
        (m,) = sink().messages([entry("x")], context())  # RFC 5424: UTC, said so with Z
        assert b" 2025-11-22T05:01:56Z " in m
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("facility,stdout,stderr", [("kern", 6, 3), ("user", 14, 11),
                                                    ("local0", 134, 131), ("23", 190, 187)])
def test_priority(facility: str, stdout: int, stderr: int) -> None:
    out = sink(syslog_facility=facility).messages([entry("a"), entry("b", "stderr")], context())
    assert [m.split(b">")[0] for m in out] == [f"<{stdout}".encode(), f"<{stderr}".encode()]


def test_sd_escaping() -> None:
    assert sd_escape('a"b\\c]d[e=f') == 'a\\"b\\\\c\\]d[e=f'
    ctx = context(name='we"ird\\na]me')
    assert structured_data(ctx) == (
        f'[pylog@32473 container_id="{CID}" container_name="we\\"ird\\\\na\\]me" '
        + SD.split('container_name="web" ')[1])


def test_keys_name_the_namespaces_and_identity_full_adds_their_inodes() -> None:
    # (the pid namespace's context has no key: an older pylog saved it; its inode stands in)
    assert structured_data(context()) == SD
    assert structured_data(context(identity="full")) == SD_FULL


def test_no_namespaces_yet_means_no_ns_params() -> None:
    assert structured_data(context(namespaces=None)) == (
        f'[pylog@32473 container_id="{CID}" container_name="web"]')


def test_header_fields_are_made_valid() -> None:
    """APP-NAME is at most 48 printable US-ASCII characters, MSGID 32, HOSTNAME 255; a tag
    Docker would send with spaces (breaking the header) gets underscores instead."""
    long_tag = "x" * 64  # {{.FullID}}
    (m,) = sink().messages([entry("hi")], context(tag=long_tag))
    assert m.split(b" ")[3] == b"x" * 48 and m.split(b" ")[5] == b"x" * 32
    (m,) = sink().messages([entry("hi")], context(tag="sh -c échô", host="my host"))
    assert m.split(b" ")[2:6] == [b"my_host", b"sh_-c__ch_", str(PID).encode(), b"sh_-c__ch_"]
    (m,) = sink().messages([entry("hi")], context(tag="", host=""))
    assert m.split(b" ")[2:6] == [b"-", b"-", str(PID).encode(), b"-"]
    (m,) = sink(syslog_format="rfc3164").messages([entry("hi")], context(tag="a b"))
    assert b" a_b[" in m


def test_bytes_are_passed_on_unchanged() -> None:
    """Not UTF-8, control characters, `]` and quotes: MSG is the line's bytes (no BOM)."""
    raw = b'\xff\xfe bad \t tab \r cr \x00 nul ] "q" \\ \xc3\xa9'
    (m,) = sink().messages([entry(raw)], context())
    assert m.endswith(f"{SD} ".encode() + raw)
    assert b"\xef\xbb\xbf" not in m


@given(st.sampled_from(["rfc5424", "rfc5424micro", "rfc3164"]),
       st.sampled_from(["udp://127.0.0.1:514", "tcp://127.0.0.1:514"]),
       st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                          st.integers(min_value=0, max_value=4102444800 * 10**9),
                          st.binary(min_size=1, max_size=40)), min_size=1, max_size=30))
def test_a_batch_is_the_line_by_line_messages(fmt: str, address: str,
                                             batch: list[tuple[str, int, bytes]]) -> None:
    """A batch of non-empty lines is encoded a column at a time; Encoder.encode does one line
    plainly: the bytes must be the same, for entries and for columns."""
    s = sink(address, syslog_format=fmt)
    ctx = context()
    entries = [LogEntry(source=src, time_nano=t, line=b) for src, t, b in batch]
    reference = Encoder(fmt, s.encoder.facility)
    expected = [reference.encode(e, ctx) for e in entries]
    assert s.messages(entries, ctx) == expected
    cols = Columns([e.source for e in entries], [e.time_nano for e in entries],
                   [e.line for e in entries])
    assert s.messages(cols, ctx) == expected


def test_empty_lines_are_not_sent_as_docker_does() -> None:
    s = sink()
    out = s.messages([entry(""), entry("a"), entry(""), entry("\r")], context())
    assert [m.rsplit(b" ", 1)[1] for m in out] == [b"a", b"\r"]
    assert s.skipped_empty == 2


def test_framing() -> None:
    assert octet_frame(b"<30>1 - - - - - -") == b"17 <30>1 - - - - - -"
    assert octet_frame("é".encode()) == b"2 \xc3\xa9"  # octets, not characters
    assert lf_frame(b"<30>x") == b"<30>x\n"
    frames = {(scheme, fmt): sink(f"{scheme}://{'/s' if scheme.startswith('unix') else 'h'}",
                                  syslog_format=fmt).frame
              for scheme in ("tcp", "tcp+tls", "unix") for fmt in ("rfc5424", "rfc5424micro",
                                                                    "rfc3164")}
    for (scheme, fmt), frame in frames.items():
        octets = scheme != "unix" and fmt != "rfc3164"
        assert frame is (octet_frame if octets else lf_frame), (scheme, fmt)


def test_cut_line() -> None:
    assert cut_line(b"abc", 3) == b"abc"
    assert cut_line(b"abcd", 3) == b"abc"
    e = "é".encode()  # 2 bytes
    assert cut_line(e * 3, 3) == e  # not half a character
    assert cut_line(e * 3, 4) == e * 2
    assert cut_line("€".encode() * 2, 4) == "€".encode()  # 3-byte characters
    assert cut_line("😀".encode() * 2, 7) == "😀".encode()  # 4-byte characters
    assert cut_line(b"\x80" * 10, 5) == b"\x80" * 5  # not UTF-8: cut where asked
    assert cut_line(b"\xff" * 10, 5) == b"\xff" * 5


@pytest.mark.parametrize("scheme", ["udp", "unixgram"])
def test_datagrams_are_cut_and_counted(scheme: str) -> None:
    s = sink(f"{scheme}://{'/s' if scheme == 'unixgram' else 'h'}")
    long = "é" * 10_000  # 20,000 bytes
    out = s.messages([entry("short"), entry(long), entry("x" * DATAGRAM_MSG_MAX)], context())
    msg = out[1][out[1].index(b"] ") + 2:]
    assert len(msg) == DATAGRAM_MSG_MAX and msg.decode() == "é" * (DATAGRAM_MSG_MAX // 2)
    assert out[2].endswith(b"x" * DATAGRAM_MSG_MAX)  # exactly the limit: whole
    assert s.truncated_lines == 1 and s.truncated_bytes == 20_000 - DATAGRAM_MSG_MAX
    assert all(len(m) < 65_507 for m in out)


@pytest.mark.parametrize("scheme", ["tcp", "tcp+tls", "unix"])
def test_streams_are_not_cut(scheme: str) -> None:
    s = sink(f"{scheme}://{'/s' if scheme == 'unix' else 'h'}")
    (m,) = s.messages([entry("x" * 100_000)], context())
    assert m.endswith(b" " + b"x" * 100_000) and s.truncated_lines == 0


# --------------------------------------------------------------------------------- connections

class StreamServer:
    """A TCP server that records each connection's bytes."""

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        self.connections.append(buf)
        self.writers.append(writer)
        while data := await reader.read(65536):
            buf += data

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


async def until(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)  # polling, bounded by the deadline


async def test_one_batch_is_one_write_of_octet_counted_frames() -> None:
    server = StreamServer()
    await server.start()
    s = sink(f"tcp://127.0.0.1:{server.port}")
    writes: list[bytes] = []
    lines = [entry(f"line {i}") for i in range(100)]
    try:
        await s.send(lines[:1], context())  # connects
        assert s._writer is not None
        real = s._writer.write
        s._writer.write = lambda data: (writes.append(bytes(data)), real(data))[1]  # type: ignore
        await s.send(lines[1:], context())
        assert len(writes) == 1
        expected = b"".join(octet_frame(m) for m in s.messages(lines, context()))
        await until(lambda: len(server.connections[0]) >= len(expected))
        assert bytes(server.connections[0]) == expected
    finally:
        await s.close()
        await server.stop()


async def test_reconnects_when_the_server_closed_the_connection_between_batches() -> None:
    server = StreamServer()
    await server.start()
    s = sink(f"tcp://127.0.0.1:{server.port}", syslog_format="rfc3164")
    try:
        await s.send([entry("one")], context())
        await until(lambda: server.connections and server.connections[0].endswith(b"one\n"))
        server.writers[0].close()  # the server drops the connection (e.g. a restart)
        await until(lambda: s._peer_closed)
        await s.send([entry("two")], context())  # would be lost on the old connection
        await until(lambda: len(server.connections) == 2 and server.connections[1].endswith(
            b"two\n"))
        assert b"two" not in server.connections[0]
    finally:
        await s.close()
        await server.stop()


async def test_connection_refused_raises_then_the_next_send_connects() -> None:
    port = _free_tcp_port()
    s = sink(f"tcp://127.0.0.1:{port}")
    with pytest.raises(SinkError, match=f"syslog at tcp://127.0.0.1:{port}"):
        await s.send([entry("a")], context())
    server = StreamServer()
    await server.start(port)
    try:
        await s.send([entry("a")], context())
        await until(lambda: server.connections and server.connections[0].endswith(b" a"))
    finally:
        await s.close()
        await server.stop()


async def test_udp_sends_one_datagram_per_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        s = sink(f"udp://127.0.0.1:{rx.getsockname()[1]}")
        lines = [entry(f"l{i}") for i in range(5)] + [entry(""), entry("x" * 40_000)]
        await s.send(lines, context())
        got = [rx.recv(65_536) for _ in range(6)]
        assert got == s.messages(lines, context())  # no framing, no newline
        assert got[-1].endswith(b"x" * DATAGRAM_MSG_MAX)
        await s.close()


async def test_unixgram_without_a_receiver_raises(tmp_path: Path) -> None:
    s = sink(f"unixgram://{tmp_path}/none.sock")
    with pytest.raises(SinkError, match="unixgram://"):
        await s.send([entry("a")], context())
    path = tmp_path / "rx.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        rx.settimeout(10)
        s = sink(f"unixgram://{path}")
        await s.send([entry("a"), entry("b")], context())
        assert [rx.recv(65_536)[-1:] for _ in range(2)] == [b"a", b"b"]
        rx.close()
        path.unlink()
        with pytest.raises(SinkError):
            await s.send([entry("c")], context())  # the receiver went away
        await s.close()


async def test_cut_and_empty_lines_are_counted_once_per_delivered_batch(tmp_path: Path) -> None:
    path = tmp_path / "rx.sock"
    s = sink(f"unixgram://{path}")
    batch = [entry("x" * 20_000), entry(""), entry("ok")]
    for _ in range(3):  # failed tries count nothing
        with pytest.raises(SinkError):
            await s.send(batch, context())
    assert (s.truncated_lines, s.truncated_bytes, s.skipped_empty) == (0, 0, 0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        await s.send(batch, context())
        assert len(rx.recv(65_536)) < 20_000
    assert (s.truncated_lines, s.truncated_bytes, s.skipped_empty) == (
        1, 20_000 - DATAGRAM_MSG_MAX, 1)
    await s.close()


async def test_a_batch_of_only_empty_lines_sends_nothing() -> None:
    s = sink(f"tcp://127.0.0.1:{_free_tcp_port()}")  # nobody listens: a connect would fail
    await s.send([entry(""), entry("")], context())
    assert s.skipped_empty == 2


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- real rsyslogd

@pytest.fixture(scope="module")
def rsyslogd(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles,
             ) -> Iterator[Rsyslogd]:
    server = Rsyslogd(tmp_path_factory.mktemp("rsyslogd"), tls_files)
    server.start()
    yield server
    server.stop()


LINES = [entry("hello"), entry("oops", "stderr"), entry(b"bad \xff\xfe utf-8"),
         entry('tab\tcr\r quote" backslash\\ bracket] end'), entry(""),
         entry("é" * 3000, "stderr")]
SENT = [line for line in LINES if line.line]
TRANSPORTS = ["udp", "tcp", "unix", "unixgram", "tls"]
FORMATS = ["rfc5424", "rfc5424micro", "rfc3164"]


def _tls_opts(server: Rsyslogd, name: str) -> dict[str, str]:
    return {"syslog_tls_ca_cert": str(server.tls.ca_pem)} if name in ("tls", "mtls") \
        and server.tls else {}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_transport_and_format_reaches_rsyslog(rsyslogd: Rsyslogd, transport: str,
                                                          fmt: str, utc: None) -> None:
    tag = f"t-{transport}-{fmt}"
    s = sink(rsyslogd.address(transport), syslog_format=fmt, syslog_facility="local4",
             **_tls_opts(rsyslogd, transport))
    ctx = context(tag=tag)
    try:
        await s.send(LINES[:3], ctx)
        await s.send(LINES[3:], ctx)  # a second batch on the same connection
    finally:
        await s.close()
    got = await rsyslogd.receive(len(SENT), lambda r: r.app == tag)
    assert [r.input for r in got] == [transport] * len(SENT)
    # Exactly what was sent, framing removed (datagrams need none: one message each).
    assert [r.raw for r in got] == s.messages(SENT, ctx)
    # ...and rsyslog understood it: facility, severity, fields, structured data, text.
    assert [r.facility for r in got] == [20] * len(SENT)
    assert [r.severity for r in got] == [3 if line.source == "stderr" else 6 for line in SENT]
    assert {r.hostname for r in got} == {"vm"}
    assert {r.procid for r in got} == {str(PID)}
    if fmt == "rfc3164":
        assert [r.msg for r in got] == [b" " + line.line for line in SENT]  # Docker's ": "
    else:
        assert [r.msg for r in got] == [line.line for line in SENT]
        assert {r.msgid for r in got} == {tag}
        assert {r.sd for r in got} == {SD}
    if transport != "unixgram":  # imuxsock stamps messages with its own clock
        stamp = "2025-11-22T05:01:56.585015Z" if fmt == "rfc5424micro" else (
            "2025-11-22T05:01:56Z" if fmt == "rfc5424" else "-11-22T05:01:56+00:00")
        assert all(r.time.endswith(stamp) for r in got), got[0].time


async def test_long_lines_whole_on_tcp_and_cut_on_udp(rsyslogd: Rsyslogd) -> None:
    long = entry("y" * 40_000)
    for transport in ("tcp", "udp"):
        s = sink(rsyslogd.address(transport))
        await s.send([long, entry("after")], context(tag=f"long-{transport}"))
        await s.close()
        tag = f"long-{transport}"
        got = await rsyslogd.receive(2, lambda r: r.app == tag)  # noqa: B023 (used at once)
        size = 40_000 if transport == "tcp" else DATAGRAM_MSG_MAX
        assert [r.msg for r in got] == [b"y" * size, b"after"], transport
        assert s.truncated_lines == (1 if transport == "udp" else 0)


async def test_tls_verification(rsyslogd: Rsyslogd) -> None:
    """The right CA delivers; a wrong CA, no CA (system roots only) or a name that is not the
    certificate's fails and delivers nothing; skip-verify=true delivers anyway; =false does
    not skip (Docker's flaw)."""
    tls = rsyslogd.tls
    assert tls is not None
    good, ip = rsyslogd.address("tls"), rsyslogd.address("tls").replace("localhost", "127.0.0.1")
    failing = {
        "wrong-ca": (good, {"syslog_tls_ca_cert": str(tls.wrong_ca_pem)}),
        "wrong-ca-skip-false": (good, {"syslog_tls_ca_cert": str(tls.wrong_ca_pem),
                                       "syslog_tls_skip_verify": "false"}),
        "system-roots": (good, {}),
        "wrong-name": (ip, {"syslog_tls_ca_cert": str(tls.ca_pem)}),
    }
    for tag, (address, opts) in failing.items():
        s = sink(address, **opts)
        with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            await s.send([entry("must not arrive")], context(tag=tag))
        await s.close()
    delivering = {
        "right-ca": (good, {"syslog_tls_ca_cert": str(tls.ca_pem)}),
        "wrong-ca-skip-true": (good, {"syslog_tls_ca_cert": str(tls.wrong_ca_pem),
                                      "syslog_tls_skip_verify": "true"}),
        "wrong-name-skip-true": (ip, {"syslog_tls_skip_verify": "true"}),
    }
    for tag, (address, opts) in delivering.items():
        s = sink(address, **opts)
        await s.send([entry("arrives")], context(tag=tag))
        await s.close()
    got = await rsyslogd.receive(3, lambda r: r.app in delivering or r.app in failing)
    assert sorted(r.app for r in got) == sorted(delivering)
    assert all(r.msg == b"arrives" for r in got)


async def test_client_certificate(rsyslogd: Rsyslogd) -> None:
    """syslog-tls-cert and syslog-tls-key are presented to a server that demands them."""
    tls = rsyslogd.tls
    assert tls is not None
    s = sink(rsyslogd.address("mtls"), syslog_tls_ca_cert=str(tls.ca_pem),
             syslog_tls_cert=str(tls.client_pem), syslog_tls_key=str(tls.client_key))
    await s.send([entry("with a client certificate")], context(tag="mtls"))
    await s.close()
    (r,) = await rsyslogd.receive(1, lambda r: r.app == "mtls")
    assert r.input == "mtls" and r.msg == b"with a client certificate"


async def test_rsyslog_restart_between_batches_loses_nothing(
        tmp_path: Path, tls_files: TlsFiles) -> None:
    server = Rsyslogd(tmp_path / "rs", tls_files)
    await asyncio.to_thread(server.start)
    try:
        senders = {name: sink(server.address(name), **_tls_opts(server, name))
                   for name in ("tcp", "tls", "unix")}
        for name, s in senders.items():
            await s.send([entry("before")], context(tag=f"restart-{name}"))
        # The peer's own waits and restarts block: in a thread, off the sinks' loop.
        await asyncio.to_thread(server.wait_for, 3, lambda r: r.app.startswith("restart-"))
        await asyncio.to_thread(server.stop)
        for name, s in senders.items():
            await until(lambda s=s: s._peer_closed)  # each noticed its connection close
            with pytest.raises(SinkError):
                await s.send([entry("while down")], context(tag=f"restart-{name}"))
        await asyncio.to_thread(server.start)
        for name, s in senders.items():  # what delivery does: the same batch again
            await s.send([entry("while down")], context(tag=f"restart-{name}"))
            await s.close()
        got = await asyncio.to_thread(server.wait_for, 6, lambda r: r.app.startswith("restart-"))
        assert sorted((r.app, r.msg) for r in got) == sorted(
            (f"restart-{n}", m) for n in senders for m in (b"before", b"while down"))
    finally:
        await asyncio.to_thread(server.stop)


def test_received_parses_what_rsyslog_wrote(rsyslogd: Rsyslogd) -> None:
    """The peer itself: a hand-made message comes back field by field."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                  b'[exampleSDID@32473 iut="3"] An application event \xff',
                  ("127.0.0.1", rsyslogd.ports["udp"]))
    (r,) = rsyslogd.wait_for(1, lambda r: r.app == "evntslog")
    assert r == Received(
        input="udp", raw=r.raw, pri=165, facility=20, severity=5,
        hostname="mymachine.example.com", app="evntslog", procid="-", msgid="ID47",
        sd='[exampleSDID@32473 iut="3"]', time="2003-10-11T22:14:15.003Z",
        msg=b"An application event \xff")
    assert re.match(rb"<165>1 2003-10-11T22:14:15.003Z .* \xff$", r.raw)
