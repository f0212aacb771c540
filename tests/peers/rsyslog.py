"""A private rsyslogd for the syslog tests: its own config, pid file and work dir, listening on
free 127.0.0.1 ports and on sockets in its directory, writing every message it receives as one
JSON object per line (the raw message and the fields rsyslog parsed from it).

Inputs (``Rsyslogd.address(name)`` gives the ``syslog-address`` for each):

- ``udp`` (imudp), ``tcp`` (imptcp), ``unix`` (imptcp on a unix stream socket),
  ``unixgram`` (imuxsock on a datagram socket),
- ``tls`` (imtcp + GnuTLS, anonymous clients) and ``mtls`` (clients must show a certificate
  signed by the test CA), when started with :class:`TlsFiles`.

rsyslog's control-character escaping is off and its message size limit is 64 KiB, so ``raw``
is the message exactly as it was received (minus framing).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INPUTS = ("udp", "tcp", "unix", "unixgram", "tls", "mtls")


def rsyslogd_problem() -> str | None:
    if shutil.which("rsyslogd") is None:
        return "rsyslogd is not installed (scripts/setup-host.sh installs rsyslog)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (scripts/setup-host.sh installs it)"
    if not list(Path("/usr/lib").glob("*/rsyslog/lmnsd_gtls.so")) and \
            not list(Path("/usr/lib").glob("rsyslog/lmnsd_gtls.so")):
        return "rsyslog-gnutls is not installed (scripts/setup-host.sh installs it)"
    return None


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class TlsFiles:
    """A test CA, a server certificate for localhost (not 127.0.0.1) signed by it, a client
    certificate signed by it, and an unrelated CA (the "wrong" one)."""

    directory: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        d = directory
        d.mkdir(parents=True, exist_ok=True)
        for ca in ("ca", "wrong-ca"):
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                     "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=pylog test {ca}", cwd=d)
        # Only the name localhost: tcp+tls://127.0.0.1:port is a hostname mismatch.
        (d / "server.ext").write_text("subjectAltName=DNS:localhost\n")
        for name, subject in (("server", "/CN=localhost"), ("client", "/CN=pylog-client")):
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                     "-out", f"{name}.csr", "-subj", subject, cwd=d)
            extra = ["-extfile", "server.ext"] if name == "server" else []
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                     "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra, cwd=d)
        return cls(d)

    def __getattr__(self, name: str) -> Path:  # tls.ca_pem, tls.client_key, ...
        if name.startswith("_"):
            raise AttributeError(name)
        stem, _, ext = name.rpartition("_")
        return self.directory / f"{stem.replace('_', '-')}.{ext}"


@dataclass
class Received:
    input: str
    raw: bytes  # the message as received, without framing
    pri: int
    facility: int
    severity: int
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: str
    time: str  # rsyslog's TIMESTAMP (as reported in the message), RFC 3339
    msg: bytes


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Rsyslogd:
    def __init__(self, directory: Path, tls: TlsFiles | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.conf = self.dir / "rsyslog.conf"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.out = self.dir / "received.jsonl"
        self.internal = self.dir / "rsyslogd-internal.log"
        self.stderr = self.dir / "rsyslogd.stderr"
        self.ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port(socket.SOCK_STREAM)}
        if tls is not None:
            self.ports["tls"] = free_port(socket.SOCK_STREAM)
            self.ports["mtls"] = free_port(socket.SOCK_STREAM)
        self.paths = {"unix": self.dir / "stream.sock", "unixgram": self.dir / "dgram.sock"}
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._received: list[Received] = []

    def address(self, name: str) -> str:
        """The syslog-address of an input (TLS ones by the name their certificate has)."""
        if name in self.paths:
            return f"{name}://{self.paths[name]}"
        if name in ("tls", "mtls"):
            return f"tcp+tls://localhost:{self.ports[name]}"
        return f"{name}://127.0.0.1:{self.ports[name]}"

    def _config(self) -> str:
        d = self.dir
        glob = (f'workDirectory="{d}" maxMessageSize="64k" '
                'parser.escapeControlCharactersOnReceive="off"')
        if self.tls is not None:
            t = self.tls
            glob += (f' defaultNetstreamDriverCAFile="{t.ca_pem}"'
                     f' defaultNetstreamDriverCertFile="{t.server_pem}"'
                     f' defaultNetstreamDriverKeyFile="{t.server_key}"')
        fields = [("input", "inputname"), ("raw", "rawmsg"), ("pri", "pri"),
                  ("facility", "syslogfacility"), ("severity", "syslogseverity"),
                  ("hostname", "hostname"), ("app", "app-name"), ("procid", "procid"),
                  ("msgid", "msgid"), ("sd", "structured-data"), ("msg", "msg")]
        props = "\n".join(f'  property(outname="{o}" name="{n}" format="jsonf")'
                          for o, n in fields)
        props += ('\n  property(outname="time" name="timereported" dateformat="rfc3339" '
                  'format="jsonf")')
        lines = [
            f"global({glob})",
            'module(load="imudp")',
            'module(load="imptcp")',
            'module(load="imuxsock" SysSock.Use="off")',
            f'template(name="pylogtest" type="list" option.jsonf="on") {{\n{props}\n}}',
            (f'ruleset(name="received") {{ action(type="omfile" file="{self.out}" '
             'template="pylogtest") }'),
            (f'input(type="imudp" address="127.0.0.1" port="{self.ports["udp"]}" name="udp" '
             'ruleset="received")'),
            (f'input(type="imptcp" address="127.0.0.1" port="{self.ports["tcp"]}" name="tcp" '
             'ruleset="received")'),
            (f'input(type="imptcp" path="{self.paths["unix"]}" unlink="on" name="unix" '
             'ruleset="received")'),
            # The regular parsers (RFC 5424 and 3164) instead of imuxsock's local-log parser.
            (f'input(type="imuxsock" socket="{self.paths["unixgram"]}" ruleset="received" '
             'useSpecialParser="off" parseHostname="on" ratelimit.interval="0")'),
            # rsyslogd's own messages (errors, rejected TLS peers) go here.
            f'*.* action(type="omfile" file="{self.internal}")',
        ]
        if self.tls is not None:
            lines.insert(3, 'module(load="imtcp")')
            for name, auth in (("tls", "anon"), ("mtls", "x509/certvalid")):
                lines.append(
                    f'input(type="imtcp" address="127.0.0.1" port="{self.ports[name]}" '
                    f'name="{name}" ruleset="received" streamDriver.name="gtls" '
                    f'streamDriver.mode="1" streamDriver.authMode="{auth}")')
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> None:
        self.conf.write_text(self._config())
        self.pidfile.unlink(missing_ok=True)
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=err, stderr=subprocess.STDOUT, cwd=self.dir,
                env={**os.environ, "TZ": "UTC"})  # how it reads RFC 3164's local times
        deadline = time.monotonic() + timeout
        while not self.listening():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.diagnostics()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd did not listen within {timeout} s: "
                                   f"{self.diagnostics()}")
            time.sleep(0.05)  # polling for the listeners, bounded by the deadline

    def listening(self) -> bool:
        """Every input is bound (UDP from /proc/net/udp; the others by connecting)."""
        udp = f"0100007F:{self.ports['udp']:04X}"
        try:
            if not any(line.split()[1] == udp
                       for line in Path("/proc/net/udp").read_text().splitlines()[1:]):
                return False
        except OSError:
            return False
        checks: list[tuple[int, int, object]] = [
            (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", self.ports[n]))
            for n in ("tcp", "tls", "mtls") if n in self.ports]
        checks += [(socket.AF_UNIX, socket.SOCK_STREAM, str(self.paths["unix"])),
                   (socket.AF_UNIX, socket.SOCK_DGRAM, str(self.paths["unixgram"]))]
        for family, kind, addr in checks:
            with socket.socket(family, kind) as s:
                try:
                    s.connect(addr)  # type: ignore[arg-type]
                except OSError:
                    return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def diagnostics(self) -> str:
        parts = []
        for f in (self.stderr, self.internal):
            if f.exists():
                parts.append(f"{f.name}: {f.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ what arrived

    def received(self, input: str | None = None) -> list[Received]:
        """Everything received so far (optionally on one input), in arrival order."""
        try:
            with open(self.out, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        end = data.rfind(b"\n") + 1  # only whole lines: rsyslog may be mid-write
        for line in data[:end].splitlines():
            d = json.loads(line.decode("utf-8", "surrogateescape"))
            self._received.append(Received(
                input={"imuxsock": "unixgram"}.get(d["input"], d["input"]), raw=_b(d["raw"]),
                pri=int(d["pri"]), facility=int(d["facility"]), severity=int(d["severity"]),
                hostname=d["hostname"], app=d["app"], procid=d["procid"], msgid=d["msgid"],
                sd=d["sd"], time=d["time"], msg=_b(d["msg"])))
        self._offset += end
        return [r for r in self._received if input is None or r.input == input]

    def wait_for(self, count: int, where: Callable[[Received], bool] = lambda r: True,
                 timeout: float = 60) -> list[Received]:
        """Polls until at least ``count`` received messages match ``where`` (or the deadline);
        returns those that match."""
        deadline = time.monotonic() + timeout
        while True:
            got = [r for r in self.received() if where(r)]
            if len(got) >= count or time.monotonic() > deadline:
                return got
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.diagnostics()}")
            time.sleep(0.05)  # polling the output file, bounded by the deadline

    async def receive(self, count: int, where: Callable[[Received], bool] = lambda r: True,
                      timeout: float = 60) -> list[Received]:
        """:meth:`wait_for` in a thread: its polling would hold an async test's loop."""
        return await asyncio.to_thread(self.wait_for, count, where, timeout)

    def internal_log(self) -> str:
        try:
            return self.internal.read_text(errors="replace")
        except FileNotFoundError:
            return ""


__all__ = ["INPUTS", "Received", "Rsyslogd", "TlsFiles", "free_port", "rsyslogd_problem"]


if __name__ == "__main__":  # handy by hand: python -m tests.peers.rsyslog DIR
    import sys
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pylog-rsyslog")
    server = Rsyslogd(target, TlsFiles.make(target / "tls"))
    server.start()
    print(json.dumps({n: server.address(n) for n in (*server.ports, *server.paths)}))
    print(f"messages: {server.out}", file=sys.stderr)
    try:
        assert server.proc is not None
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
