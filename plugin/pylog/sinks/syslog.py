"""syslog over udp, tcp, tcp+tls, unix (stream) and unixgram, with Docker's syslog options.

Messages look like those of Docker's ``syslog`` driver — the same PRI (facility, INFO for stdout,
ERR for stderr), HOSTNAME, APP-NAME (the tag), PROCID (the sending process: dockerd's PID there,
``pylog serve``'s here), MSGID (the tag again) and MSG (the line's bytes as they are) — with these
differences:

- the timestamp is the line's own (``time_nano``), not the time it was sent;
- RFC 5424 messages carry a structured-data element with the container and its namespaces::

      [pylog@32473 container_id="..." container_name="web" ns_cgroup_key="3ZrWM4OLVH2bMG" ...]

  (``ns_<type>_key`` is the namespace's key, see :mod:`pylog.nsregistry`; with
  ``identity=full`` each namespace's inode comes too, as ``ns_<type>``);

- ``syslog-tls-skip-verify`` is a real boolean (``false`` verifies); verification is on by
  default and ``syslog-tls-ca-cert`` is the only CA trusted when given;
- RFC 5424 messages on tcp and tcp+tls are octet-counted (RFC 6587 / RFC 5425); rfc3164 on tcp
  and every format on unix stream sockets are newline-terminated, as Docker sends them;
- datagrams (udp, unixgram) hold at most :data:`DATAGRAM_MSG_MAX` bytes of a line: longer lines
  are cut there (at a UTF-8 character boundary when the line is UTF-8) and counted;
- the default format is ``rfc5424`` (Docker's is its own BSD-like "unix" format).

Like Docker's driver, empty lines are not sent (a syslog message with no text says nothing) and
bytes that are not UTF-8 are passed on unchanged (RFC 5424's ``MSG-ANY``: no BOM is added, so
no receiver is told the text is UTF-8).

Syslog over a stream has no acknowledgements: a batch counts as delivered once it is written to
the socket. A connection the server has closed is noticed (a reader watches it) and replaced
before the next batch; a batch written just as the server drops the connection can be lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import add, floordiv, mod
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..errors import OptionError
from ..frames import columns_of
from ..jsonlines import Parsed, syslog_severity
from ..options import Parser, parse_bool, parse_choice
from ..reassembly import Line
from ..record import ContainerContext
from .base import Sink, SinkError, encode_off_loop

log = logging.getLogger(__name__)

DEFAULT_PORT = 514
SCHEMES = ("udp", "tcp", "tcp+tls", "unix", "unixgram")
FORMATS = ("rfc5424", "rfc5424micro", "rfc3164")
# Docker's names (Go's log/syslog priorities); Docker also accepts the numbers 0..23.
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITY_INFO = 6
SEVERITY_ERR = 3
SD_ID = "pylog@32473"  # 32473: the enterprise number RFC 5612 reserves for examples
# The most of a line one datagram carries: dockerd's own chunk size, so a datagram is never
# larger than those Docker's syslog driver sends (its 16 KiB chunks plus a header), which is
# far below UDP's 65,507-byte limit and a unix socket's default buffer.
DATAGRAM_MSG_MAX = 16 * 1024
TIMEOUT = 10.0  # connect, TLS handshake, one write
_YIELD_EVERY = 1000  # datagrams sent between two yields to the event loop
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Address = tuple[str, str, int | str]  # (scheme, host, port) or (scheme, "", path)


# ------------------------------------------------------------------------------------- options

def _bad(name: str, value: str, why: str) -> OptionError:
    return OptionError(f"invalid value {value!r} for log opt {name!r}: {why}")


def parse_syslog_address(name: str, value: str) -> Address:
    """``udp|tcp|tcp+tls://host[:port]`` (port 514 by default) or ``unix|unixgram:///path``."""
    text = value.strip()
    if "://" not in text:
        raise _bad(name, value, "expected proto://address with proto one of "
                                f"{', '.join(SCHEMES)}, e.g. udp://192.0.2.1:514")
    try:
        u = urlsplit(text)
    except ValueError as e:
        raise _bad(name, value, str(e)) from None
    scheme = u.scheme.lower()
    if scheme not in SCHEMES:
        raise _bad(name, value, f"unsupported scheme {u.scheme!r}; expected one of "
                                f"{', '.join(s + '://' for s in SCHEMES)}")
    if scheme in ("unix", "unixgram"):
        if u.netloc or not u.path.startswith("/"):
            raise _bad(name, value, f"expected {scheme}:///absolute/path/to/socket")
        return (scheme, "", u.path)
    if u.path not in ("", "/") or u.query or u.fragment:
        raise _bad(name, value, "a network address takes no path or query")
    if not u.hostname:
        raise _bad(name, value, "no host")
    try:
        port = u.port
    except ValueError:
        raise _bad(name, value, "bad port") from None
    if port == 0:
        raise _bad(name, value, "bad port")
    return (scheme, u.hostname, port or DEFAULT_PORT)


def parse_facility(name: str, value: str) -> int:
    if value in FACILITIES:
        return FACILITIES[value]
    if value.isdigit() and 0 <= int(value) <= 23:
        return int(value)
    raise _bad(name, value, f"expected one of {', '.join(FACILITIES)} or a number 0..23")


def _parse_pem_file(kind: str) -> Any:
    """A readable file holding a PEM ``kind`` ("CERTIFICATE" or "PRIVATE KEY"); the value is
    its path. The file's content never appears in a message (a key is a secret)."""
    def parse(name: str, value: str) -> str:
        path = value.strip()
        if not path:
            raise _bad(name, value, "expected the path of a PEM file")
        try:
            with open(path, "rb") as f:
                head = f.read(1 << 20)
        except OSError as e:
            raise _bad(name, value, f"cannot read it: {e.strerror}") from None
        if b"-----BEGIN " not in head or kind.encode() + b"-----" not in head:
            raise _bad(name, value, f"no PEM {kind.lower()} in it")
        return path
    return parse


parse_syslog_format = parse_choice(FORMATS)


# ------------------------------------------------------------------------------------ encoding

def _printusascii(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII, no spaces, at most ``limit`` chars;
    anything else becomes ``_``; empty becomes the NILVALUE ``-``."""
    out = "".join(c if "!" <= c <= "~" else "_" for c in text)[:limit]
    return out or "-"


def sd_escape(value: str) -> str:
    """An RFC 5424 PARAM-VALUE: ``"``, ``\\`` and ``]`` are escaped with a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def structured_data(ctx: ContainerContext) -> str:
    params = [("container_id", ctx.container_id), ("container_name", ctx.name)]
    full = ctx.identity == "full"
    for t, ns in sorted((ctx.namespaces or {}).items()):
        name = f"ns_{_printusascii(t, 25)}"
        if full or not ns.key:  # a context saved before keys: its inode is all there is
            params.append((name, str(ns.inode)))
        if ns.key:  # the inode alone can name two namespaces over time; the key never does
            params.append((f"{name}_key", ns.key))
    return "[" + SD_ID + "".join(f' {k}="{sd_escape(v)}"' for k, v in params) + "]"


def _context_parts(ctx: ContainerContext) -> tuple[str, str, str, str, str]:
    """(hostname, app-name, msgid, structured data, rfc3164 tag) of a context, built once."""
    cached: tuple[str, str, str, str, str] | None = getattr(ctx, "_syslog_parts", None)
    if cached is None:
        cached = (_printusascii(ctx.host_name, 255), _printusascii(ctx.tag, 48),
                  _printusascii(ctx.tag, 32), structured_data(ctx),
                  _printusascii(ctx.tag, 255))
        object.__setattr__(ctx, "_syslog_parts", cached)
    return cached


def cut_line(data: bytes, limit: int) -> bytes:
    """``data`` cut to at most ``limit`` bytes, not inside a UTF-8 character (when it is one)."""
    if len(data) <= limit:
        return data
    end = limit
    # Step back over at most three continuation bytes to the start of a character.
    while end > limit - 3 and end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    if (data[end] & 0xC0) == 0x80:  # not UTF-8 after all: cut at the limit
        end = limit
    return data[:end]


class Encoder:
    """Formats lines as syslog messages of one format and facility (no framing)."""

    def __init__(self, fmt: str, facility: int, pid: int | None = None) -> None:
        self.format = fmt
        self.facility = facility
        self.pid = os.getpid() if pid is None else pid
        info = facility * 8 + SEVERITY_INFO
        err = facility * 8 + SEVERITY_ERR
        if fmt == "rfc3164":
            self._pri = {"stdout": f"<{info}>".encode(), "stderr": f"<{err}>".encode()}
        else:
            self._pri = {"stdout": f"<{info}>1 ".encode(), "stderr": f"<{err}>1 ".encode()}
        self._secs = -1
        self._stamp = b""

    def _second(self, secs: int) -> bytes:
        """The timestamp's part that changes once a second."""
        if self.format == "rfc3164":
            # Docker's Go time.Stamp ("Jan _2 15:04:05"), in local time.
            t = time.localtime(secs)
            return (f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
                    f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}").encode()
        if self.format == "rfc5424micro":
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)).encode()
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs)).encode()

    def timestamp(self, ns: int) -> bytes:
        secs, frac = divmod(ns, 1_000_000_000)
        if secs != self._secs:
            self._secs = secs
            self._stamp = self._second(secs)
        if self.format == "rfc5424micro":
            return self._stamp + b".%06dZ" % (frac // 1000)
        return self._stamp

    def timestamps(self, times: list[int]) -> list[bytes]:
        """:meth:`timestamp` of every time, a column at a time (see :meth:`encode_all`)."""
        secs = list(map(floordiv, times, repeat(1_000_000_000)))
        seconds = {s: self._second(s) for s in set(secs)}
        stamps = map(seconds.__getitem__, secs)
        if self.format != "rfc5424micro":
            return list(stamps)
        micros = map(floordiv, map(mod, times, repeat(1_000_000_000)), repeat(1000))
        return list(map(add, stamps, map(b".%06dZ".__mod__, micros)))

    def middle(self, ctx: ContainerContext) -> bytes:
        """What follows the timestamp, up to the MSG, for a container."""
        host, app, msgid, sd, tag = _context_parts(ctx)
        if self.format == "rfc3164":
            return f" {host} {tag}[{self.pid}]: ".encode()
        return f" {host} {app} {self.pid} {msgid} {sd} ".encode()

    def pri(self, source: str, level: str | None = None) -> bytes:
        """The PRI (and version) of a line: by its level, if it was a JSON object with a level
        syslog knows (``parse=json``), else by its stream."""
        severity = syslog_severity(level)
        if severity is None:
            return self._pri["stderr" if source == "stderr" else "stdout"]
        pri = f"<{self.facility * 8 + severity}>"
        return (pri if self.format == "rfc3164" else pri + "1 ").encode()

    def encode(self, line: Line, ctx: ContainerContext, middle: bytes | None = None,
               text: bytes | None = None, level: str | None = None) -> bytes:
        """One line as a message; ``text`` replaces the line's bytes (a cut line); ``level``:
        the line's if it was a JSON object (``parse=json``)."""
        pri = self.pri(line.source, level)
        if middle is None:
            middle = self.middle(ctx)
        return b"".join((pri, self.timestamp(line.time_nano), middle,
                         line.line if text is None else text))

    def encode_all(self, sources: list[str], times: list[int], texts: list[bytes],
                   middle: bytes) -> list[bytes]:
        """:meth:`encode` of whole columns of lines, with a C call mapped over each column
        instead of a Python step per line (the same bytes: tests/test_sink_syslog.py)."""
        pris = map(self._pri.get, sources, repeat(self._pri["stdout"]))
        return list(map(b"".join, zip(pris, self.timestamps(times), repeat(middle), texts)))


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


def lf_frame(message: bytes) -> bytes:
    """Non-transparent framing: the message and a newline (what Docker sends on streams)."""
    return message + b"\n"


# ---------------------------------------------------------------------------------------- sink

@dataclass
class _Counts:
    empty: int = 0  # empty lines, not sent
    cut_lines: int = 0  # lines cut to fit a datagram
    cut_bytes: int = 0  # bytes cut off them


class SyslogSink(Sink):
    KIND = "syslog"
    ADDRESS_OPTION = "syslog-address"
    COLUMNS = True
    OPTIONS: ClassVar[dict[str, tuple[Parser, Any]]] = {
        "syslog-address": (parse_syslog_address, None),
        "syslog-facility": (parse_facility, FACILITIES["daemon"]),
        "syslog-format": (parse_syslog_format, "rfc5424"),
        "syslog-tls-ca-cert": (_parse_pem_file("CERTIFICATE"), None),
        "syslog-tls-cert": (_parse_pem_file("CERTIFICATE"), None),
        "syslog-tls-key": (_parse_pem_file("PRIVATE KEY"), None),
        "syslog-tls-skip-verify": (parse_bool, False),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address: Address = self.config["syslog-address"]
        self.scheme = self.address[0]
        self.datagram = self.scheme in ("udp", "unixgram")
        self.encoder = Encoder(self.config["syslog-format"], int(self.config["syslog-facility"]))
        octets = self.scheme in ("tcp", "tcp+tls") and self.encoder.format != "rfc3164"
        self.frame = octet_frame if octets else lf_frame
        self.truncated_lines = 0  # datagrams whose line was cut at DATAGRAM_MSG_MAX
        self.truncated_bytes = 0
        self.skipped_empty = 0
        self._lock = asyncio.Lock()  # one batch on the connection at a time
        self._sock: socket.socket | None = None  # udp, unixgram
        self._writer: asyncio.StreamWriter | None = None  # tcp, tcp+tls, unix
        self._watcher: asyncio.Task[None] | None = None
        self._peer_closed = False
        self._tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ encoding

    def encode(self, lines: Sequence[Line], ctx: ContainerContext,
               ) -> tuple[list[bytes], _Counts]:
        """The batch's messages, unframed (datagram lines cut to DATAGRAM_MSG_MAX bytes), and
        what was skipped or cut to make them."""
        middle = self.encoder.middle(ctx)
        counts = _Counts()
        sources, times, texts = columns_of(lines)
        lengths = list(map(len, texts))
        levels = lines.levels if isinstance(lines, Parsed) else None
        if lengths and min(lengths) > 0 and levels is None and not (self.datagram and
                                                 max(lengths) > DATAGRAM_MSG_MAX):
            return self.encoder.encode_all(sources, times, texts, middle), counts  # usual
        encode = self.encoder.encode
        out = []
        for i, line in enumerate(lines):
            if not line.line:
                counts.empty += 1
                continue
            level = levels[i] if levels is not None else None
            if self.datagram and len(line.line) > DATAGRAM_MSG_MAX:
                short = cut_line(line.line, DATAGRAM_MSG_MAX)
                counts.cut_lines += 1
                counts.cut_bytes += len(line.line) - len(short)
                out.append(encode(line, ctx, middle, short, level))
            else:
                out.append(encode(line, ctx, middle, level=level))
        return out, counts

    def messages(self, lines: Sequence[Line], ctx: ContainerContext) -> list[bytes]:
        """:meth:`encode`'s messages, counted as sent."""
        out, counts = self.encode(lines, ctx)
        self._count(counts, ctx)
        return out

    def _count(self, counts: _Counts, ctx: ContainerContext) -> None:
        self.skipped_empty += counts.empty
        if counts.cut_lines:
            if self.truncated_lines == 0 or \
                    self.truncated_lines // 1000 != (self.truncated_lines + counts.cut_lines) // 1000:
                log.warning("sink %s: %d lines from %s were longer than %d bytes and were cut to "
                            "fit a datagram (%d lines cut so far)", self.key, counts.cut_lines,
                            ctx.container_id[:12], DATAGRAM_MSG_MAX,
                            self.truncated_lines + counts.cut_lines)
            self.truncated_lines += counts.cut_lines
            self.truncated_bytes += counts.cut_bytes

    # ------------------------------------------------------------------ sending

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        async with self._lock:
            # Encoded once it is this batch's turn on the connection (see FluentdSink.send),
            # so one at a time: the Encoder's cache of the last second is not shared.
            messages, counts = await encode_off_loop(self.encode, lines, ctx)
            if not messages:
                self._count(counts, ctx)
                return
            try:
                if self.datagram:
                    await self._send_datagrams(messages)
                else:
                    await self._send_stream(messages)
            except (TimeoutError, OSError, ValueError, SinkError) as e:
                await self._drop_connection()
                if isinstance(e, SinkError):
                    raise
                raise SinkError(f"syslog at {self.where()}: {e or type(e).__name__}") from e
        self._count(counts, ctx)  # once per delivered batch, not per try

    async def _send_datagrams(self, messages: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is None:
            self._sock = await asyncio.wait_for(self._open_datagram(), TIMEOUT)
        sock = self._sock
        for i, message in enumerate(messages):
            try:
                sock.send(message)
            except BlockingIOError:
                await asyncio.wait_for(loop.sock_sendall(sock, message), TIMEOUT)
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)  # let the rest of pylog run during a long batch

    async def _open_datagram(self) -> socket.socket:
        scheme, host, port = self.address
        if scheme == "unixgram":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            target: Any = str(port)
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                 type=socket.SOCK_DGRAM)
            if not infos:
                raise OSError(f"cannot resolve {host}")
            family, _, _, _, target = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(target)  # a datagram connect only sets the peer: it does not block
        except BaseException:
            sock.close()
            raise
        return sock

    async def _send_stream(self, messages: list[bytes]) -> None:
        if self._writer is not None and (self._peer_closed or self._writer.is_closing()):
            await self._drop_connection()  # the server went away since the last batch
        if self._writer is None:
            await asyncio.wait_for(self._open_stream(), TIMEOUT)
        assert self._writer is not None
        self._writer.write(b"".join(map(self.frame, messages)))
        await asyncio.wait_for(self._writer.drain(), TIMEOUT)

    async def _open_stream(self) -> None:
        scheme, host, port = self.address
        if scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(str(port))
        else:
            # Loading a CA bundle (the system's: ~30 ms) is a file read: not on the loop.
            tls = await asyncio.to_thread(self.tls_context) if scheme == "tcp+tls" else None
            reader, writer = await asyncio.open_connection(
                host, int(port), ssl=tls, server_hostname=host if tls else None,
                ssl_handshake_timeout=TIMEOUT if tls else None)
        self._writer = writer
        self._peer_closed = False
        self._watcher = asyncio.create_task(self._watch(reader, writer),
                                            name=f"pylog-{self.key}-watch")

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reads (and ignores) whatever the server sends, to learn when it closes."""
        try:
            while await reader.read(65536):
                pass
        except OSError:  # ssl.SSLError included
            pass
        if self._writer is writer:
            self._peer_closed = True

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is not None:
            return self._tls
        ca = self.config["syslog-tls-ca-cert"]
        cert = self.config["syslog-tls-cert"]
        key = self.config["syslog-tls-key"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.config["syslog-tls-skip-verify"]:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif ca is not None:
            ctx.load_verify_locations(cafile=ca)  # the given CA only
        else:
            ctx.load_default_certs()
        if key is not None and cert is None:
            raise SinkError("syslog-tls-key is set but syslog-tls-cert is not")
        if cert is not None:
            try:
                ctx.load_cert_chain(cert, key)  # no key: the cert file holds it too
            except (OSError, ssl.SSLError) as e:
                raise SinkError(f"cannot load the client certificate {cert}"
                                f"{' with key ' + key if key else ''}: "
                                f"{getattr(e, 'reason', None) or e}") from None
        self._tls = ctx
        return ctx

    async def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (TimeoutError, OSError):  # ssl.SSLError included
                pass

    def where(self) -> str:
        scheme, host, port = self.address
        if scheme in ("unix", "unixgram"):
            return f"{scheme}://{port}"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    @property
    def target(self) -> str:
        return self.where()

    async def close(self) -> None:
        await self._drop_connection()


__all__ = ["DATAGRAM_MSG_MAX", "Encoder", "SyslogSink", "cut_line", "lf_frame", "octet_frame",
           "parse_facility", "parse_syslog_address", "sd_escape", "structured_data"]
