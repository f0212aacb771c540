"""The record sinks send: one line plus its container's context.

The context (identity, selected labels and env, tag, namespaces) is built once per container and
whenever what it says changes (namespaces found, a sharing container comes or goes), and kept
pre-encoded; per line only the time, stream and message are added.

The JSON form, which the Elasticsearch sink indexes and ``pylog tail`` prints, uses ECS names;
each namespace is its key alone, as the records of a busy container repeat it on every line
(``--log-opt identity=full`` adds inodes, ids, the host's ids and the image id):

    {"@timestamp": "2026-11-22T03:56:09.670262696Z", "message": "hello", "stream": "stdout",
     "tag": "3f2a1b9c0d1e",
     "container": {"id": ..., "name": ..., "image": {"name": ...}, "labels": {...}},
     "host": {"name": ...}, "process": {"pid": 12345},
     "pylog": {"env": {...}, "ns_key": {"net": "3fZq8Lk2mPx0Wd", ...},
               "host_ns": ["cgroup", "time", "user"], "ns_shared": {"net": ["web"]}}}

:meth:`ContainerContext.fields` is the whole context (``pylog inspect``, ``context.json``).
"""

from __future__ import annotations

import functools
import json
import json.encoder
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, floordiv, methodcaller, mod
from typing import Any

from .entry import LogEntry
from .frames import columns_of
from .hostid import host_identity
from .jsonlines import Parsed
from .namespaces import HeldNamespaces, NamespaceIdentity
from .nsregistry import NamespaceRegistry, namespace_key
from .options import LogOptions
from .tag import render_tag


@dataclass(frozen=True, slots=True)
class NamespaceView:
    type: str
    inode: int
    id: int | None
    is_host: bool
    shared_with: tuple[str, ...] = ()
    key: str = ""  # never names another namespace (see pylog.nsregistry); "" in old contexts

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key} if self.key else {}
        out["inode"] = self.inode
        if self.id is not None:
            out["id"] = self.id
        out["is_host"] = self.is_host
        if self.shared_with:
            out["shared_with"] = list(self.shared_with)
        return out


@dataclass(frozen=True)
class ContainerContext:
    """Everything a record says besides time, stream and message."""

    container_id: str
    name: str
    image_name: str
    image_id: str
    tag: str
    host_name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    pid: int | None = None
    namespaces: Mapping[str, NamespaceView] | None = None
    host_id: str = ""  # the machine id (ECS host.id)
    boot_id: str = ""  # the boot the container ran in (ECS host.boot.id)
    host_pid_ns_ino: int | None = None  # the host's PID namespace inode (ECS host.pid_ns_ino)
    identity: str = "keys"  # what records say of it: "keys" or "full" (--log-opt identity)
    # compose/swarm service and project (Loki's label names: compose_service...), from labels
    orchestration: Mapping[str, str] = field(default_factory=dict)

    def host_fields(self) -> dict[str, Any]:
        host: dict[str, Any] = {"name": self.host_name}
        if self.host_id:
            host["id"] = self.host_id
        if self.boot_id:
            host["boot"] = {"id": self.boot_id}
        if self.host_pid_ns_ino is not None:
            host["pid_ns_ino"] = self.host_pid_ns_ino
        return host

    def _assemble(self, image: dict[str, Any], host: dict[str, Any],
                  namespaces: dict[str, Any]) -> dict[str, Any]:
        """The nested form both :meth:`fields` and :meth:`record_fields` give, around the parts
        in which they differ: the image, the host and the namespaces' members of ``pylog``."""
        container: dict[str, Any] = {"id": self.container_id, "name": self.name, "image": image}
        if self.labels:
            container["labels"] = dict(self.labels)
        out: dict[str, Any] = {"tag": self.tag, "container": container, "host": host}
        if self.pid is not None:
            out["process"] = {"pid": self.pid}
        pylog: dict[str, Any] = {"env": dict(self.env)} if self.env else {}
        pylog.update(namespaces)
        if pylog:
            out["pylog"] = pylog
        return out

    def fields(self) -> dict[str, Any]:
        """The nested JSON form, without the per-line keys."""
        ns = {} if self.namespaces is None else {
            "ns": {t: v.fields() for t, v in sorted(self.namespaces.items())}}
        out = self._assemble({"name": self.image_name, "id": self.image_id},
                             self.host_fields(), ns)
        if self.identity != "keys":
            out["identity"] = self.identity
        if self.orchestration:
            out["orchestration"] = dict(self.orchestration)
        return out

    def record_fields(self) -> dict[str, Any]:
        """What each record says of the container, without the per-line keys: with
        ``identity=keys`` each namespace by its key alone, the host's namespaces as one list."""
        full = self.identity == "full"
        ns = {} if self.namespaces is None else namespace_fields(self.namespaces, full)
        if full:
            return self._assemble({"name": self.image_name, "id": self.image_id},
                                  self.host_fields(), ns)
        return self._assemble({"name": self.image_name}, {"name": self.host_name}, ns)

    @property
    def json_fragment(self) -> str:
        """The context's JSON members, ready to be spliced into each line's object."""
        cached: str | None = getattr(self, "_fragment", None)
        if cached is None:
            cached = json.dumps(self.record_fields(), ensure_ascii=False,
                                separators=(",", ":"))[1:-1]
            object.__setattr__(self, "_fragment", cached)
        return cached


def namespace_fields(namespaces: Mapping[str, NamespaceView], full: bool) -> dict[str, Any]:
    """``ns_key`` (type -> key), ``host_ns`` (the types that are the host's), ``ns_shared``
    (type -> the other attached containers in it, where any); with ``full`` also ``ns_inode``
    and ``ns_id`` (type -> the inode, the NS_GET_ID id where the kernel has it)."""
    views = sorted(namespaces.items())
    # A context saved before keys existed has none: its inode stands in (unique while held).
    out: dict[str, Any] = {"ns_key": {t: v.key or f"ino{v.inode}" for t, v in views},
                           "host_ns": [t for t, v in views if v.is_host]}
    shared = {t: list(v.shared_with) for t, v in views if v.shared_with}
    if shared:
        out["ns_shared"] = shared
    if full:
        out["ns_inode"] = {t: v.inode for t, v in views}
        ids = {t: v.id for t, v in views if v.id is not None}
        if ids:
            out["ns_id"] = ids
    return out


# The labels Docker Compose and swarm set, under the names Loki's Docker driver gives them.
ORCHESTRATION_LABELS = {"com.docker.compose.service": "compose_service",
                        "com.docker.compose.project": "compose_project",
                        "com.docker.swarm.service.name": "swarm_service",
                        "com.docker.stack.namespace": "swarm_stack"}


def _dedot(key: str) -> str:
    # Elasticsearch would turn "com.example.x" into nested objects that clash with a label
    # "com.example"; Beats replaces the dots, and so do we.
    return key.replace(".", "_")


def select(pairs: Mapping[str, str], names: Iterable[str], pattern: re.Pattern[str] | None,
           ) -> dict[str, str]:
    """What Docker's drivers pass on: the keys named in ``names`` or matching ``pattern``."""
    wanted = set(names)
    return {k: v for k, v in pairs.items() if k in wanted or (pattern and pattern.search(k))}


def env_map(env: Iterable[str] | None) -> dict[str, str]:
    out = {}
    for item in env or ():
        key, _, value = item.partition("=")
        out[key] = value
    return out


def build_context(info: Mapping[str, Any], options: LogOptions,
                  held: HeldNamespaces | None = None,
                  host: Mapping[str, NamespaceIdentity] | None = None,
                  registry: NamespaceRegistry | None = None,
                  host_name: str | None = None,
                  names: Mapping[str, str] | None = None) -> ContainerContext:
    """``names`` maps the IDs of other attached containers to their names, for shared_with."""
    all_labels = info.get("ContainerLabels") or {}
    labels = select(all_labels, options["labels"], options["labels-regex"])
    env = select(env_map(info.get("ContainerEnv")), options["env"], options["env-regex"])
    namespaces = None
    container_id = str(info.get("ContainerID") or "")
    machine = host_identity()
    if held is not None:
        host = host or {}
        namespaces = {}
        for t, ident in held.identities.items():
            is_host = t in host and host[t].key == ident.key
            # In the host's namespace every container shares with every other: is_host says
            # it, and listing them all would make each record grow with the host's size.
            others = registry.sharing(container_id, ident) if registry and not is_host else []
            namespaces[t] = NamespaceView(
                type=t, inode=ident.inode, id=ident.id, is_host=is_host,
                shared_with=tuple(sorted((names or {}).get(o, o[:12]) for o in others)),
                key=registry.key_of(ident) if registry else namespace_key(machine.boot_id, ident))
    return ContainerContext(
        container_id=container_id,
        name=str(info.get("ContainerName") or "").lstrip("/"),
        image_name=str(info.get("ContainerImageName") or ""),
        image_id=str(info.get("ContainerImageID") or ""),
        tag=render_tag(options["tag"], info),
        host_name=host_name or os.uname().nodename,
        labels={_dedot(k): v for k, v in labels.items()},
        env=env,
        pid=held.pid if held is not None else None,
        namespaces=namespaces,
        host_id=machine.machine_id,
        boot_id=machine.boot_id,
        host_pid_ns_ino=host["pid"].inode if host and "pid" in host else None,
        identity=options["identity"],
        orchestration={name: str(all_labels[key]) for key, name in ORCHESTRATION_LABELS.items()
                       if all_labels.get(key)},
    )


class TimestampFormatter:
    """RFC 3339 UTC with nine fractional digits; the date part is formatted once a second."""

    def __init__(self) -> None:
        self._secs = -1
        self._prefix = ""

    def __call__(self, ns: int) -> str:
        secs, frac = divmod(ns, 1_000_000_000)
        if secs != self._secs:
            self._secs = secs
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(secs))
        return f"{self._prefix}{frac:09d}Z"


_dumps = json.JSONEncoder(ensure_ascii=False).encode


def record_json(line: LogEntry, ctx: ContainerContext, ts: TimestampFormatter) -> str:
    """One record in its JSON form (a single line of text)."""
    message = _dumps(line.line.decode("utf-8", "replace"))
    return (f'{{"@timestamp":"{ts(line.time_nano)}","message":{message},'
            f'"stream":"{line.source}",{ctx.json_fragment}}}')


_NS = 1_000_000_000
_encode_str = json.encoder.encode_basestring  # what _dumps does for a str (ensure_ascii=False)
_decode = functools.partial(str, encoding="utf-8", errors="replace")
_FRACTION = b'%09dZ","message":'
_FRACTION_QUOTE = b'%09dZ","message":"'  # the message's opening quote too
_UNSAFE = re.compile(rb'[\x00-\x1f"\\]')  # the bytes a JSON string needs escaped (as json does)


@dataclass(slots=True)
class RecordColumns:
    """A batch's records in their JSON form (UTF-8), as columns: line i's record is
    ``heads[i] + fraction % nanos[i] + messages[i] + tails[i]``, that is ``lead +
    '{"@timestamp":"<date>.' + '<ns>Z","message":' + <message> + ',"stream":"<source>",
    <context>}' + end``. The heads and tails hold a few shared objects (one per distinct second,
    one per stream), so a record is never made as a string of its own: a sink formats the
    columns of a whole request at once (one copy of each byte, :meth:`form`).

    ``head_size``, ``fraction_size`` and ``tail_size`` are the sizes every head, fraction and
    tail have, or None when they differ (a year outside 1000-9999, a stream name other than
    stdout/stderr's length). When every message of the batch is :func:`plain_text`, the
    messages are the lines' own bytes and the quotes around them are in the fractions and
    tails."""

    heads: list[bytes]
    nanos: list[int]  # each line's nanoseconds within its second
    messages: list[bytes]
    tails: list[bytes]
    head_size: int | None
    fraction: bytes  # the nanoseconds' %-format and what follows them up to the message
    tail_size: int | None

    @property
    def fraction_size(self) -> int:
        return len(self.fraction % 0)

    @property
    def fractions(self) -> list[bytes]:
        """Each line's fraction part, formatted."""
        return list(map(self.fraction.__mod__, self.nanos))

    def form(self) -> bytes:
        """The %-format of one record, taking its head, nanoseconds, message and tail: many
        records are this format repeated, applied once to their columns (one C call that
        copies each byte once: two thirds of the time of joining parts made one per line)."""
        return b"%s" + self.fraction + b"%s%s"

    def sliced(self, start: int, stop: int) -> RecordColumns:
        """Records ``start`` to ``stop``."""
        return RecordColumns(self.heads[start:stop], self.nanos[start:stop],
                             self.messages[start:stop], self.tails[start:stop], self.head_size,
                             self.fraction, self.tail_size)

    def picked(self, indices: Sequence[int]) -> RecordColumns:
        """These records, in this order."""
        def pick(column: list[Any]) -> list[Any]:
            return list(map(column.__getitem__, indices))
        return RecordColumns(pick(self.heads), pick(self.nanos), pick(self.messages),
                             pick(self.tails), self.head_size, self.fraction, self.tail_size)

    @classmethod
    def concat(cls, many: Sequence[RecordColumns]) -> RecordColumns:
        """Records of one batch (the same fraction format), one after the other."""
        first = many[0]
        if any(c.fraction != first.fraction for c in many):
            raise ValueError("records of different batches")
        heads: list[bytes] = []
        nanos: list[int] = []
        messages: list[bytes] = []
        tails: list[bytes] = []
        for c in many:
            heads += c.heads
            nanos += c.nanos
            messages += c.messages
            tails += c.tails
        return cls(heads, nanos, messages, tails,
                   _same(c.head_size for c in many), first.fraction,
                   _same(c.tail_size for c in many))

    def size(self) -> int:
        """All the records' bytes."""
        n = len(self.messages)
        heads = (n * self.head_size if self.head_size is not None
                 else sum(map(len, self.heads)))
        tails = (n * self.tail_size if self.tail_size is not None
                 else sum(map(len, self.tails)))
        return heads + n * self.fraction_size + sum(map(len, self.messages)) + tails

    def sizes(self) -> list[int]:
        """Each record's size in bytes."""
        if self.head_size is not None and self.tail_size is not None:
            fixed = self.head_size + self.fraction_size + self.tail_size
            return list(map(add, map(len, self.messages), repeat(fixed)))
        return list(map(add, map(add, map(len, self.heads), map(len, self.tails)),
                        map(add, map(len, self.messages), repeat(self.fraction_size))))


def interleaved(*columns: Sequence[Any]) -> tuple[Any, ...]:
    """The items of equally long columns, row by row, as one tuple (a %-format's arguments):
    filled by a slice assignment a column, a quarter faster than chaining the rows of a zip."""
    width = len(columns)
    out: list[Any] = [None] * (width * len(columns[0]))
    for k, column in enumerate(columns):
        out[k::width] = column
    return tuple(out)


def plain_text(texts: list[bytes]) -> bool:
    """Whether every line is, as it is, the inside of its JSON string: valid UTF-8 without a
    quote, a backslash or a control character. Two C passes over the batch joined (by a space,
    so that no UTF-8 sequence can span two lines)."""
    joined = b" ".join(texts)
    if _UNSAFE.search(joined) is not None:
        return False
    if joined.isascii():
        return True
    try:
        joined.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _same_size(parts: Iterable[bytes]) -> int | None:
    return _same(map(len, parts))


def _same(sizes: Iterable[int | None]) -> int | None:
    found = set(sizes)
    return found.pop() if len(found) == 1 else None


def record_columns(lines: Sequence[LogEntry], ctx: ContainerContext, lead: bytes = b"",
                   end: bytes = b"") -> RecordColumns:
    """The records of a batch as :class:`RecordColumns` (the same text as :func:`record_json`).

    Each column is one C call mapped over the batch (``map`` of builtin functions: the date part
    formatted once per distinct second, the message decoded, JSON-escaped and encoded, the
    stream's part looked up), not a Python step per line; ``lead`` and ``end`` go around every
    record in the shared parts, at no cost per line. When the batch is :func:`plain_text` (one
    check for the batch), the messages are the lines themselves, not copied; else each is
    decoded, JSON-escaped and encoded (three C calls a line). What it buys: half the
    Elasticsearch sink's encoding time a line against a string per record (bench/run.py, B1 side
    by side); plain lines taken as they are save a third of the columns' time."""
    sources, times, texts = columns_of(lines)
    heads, date = _heads(times, lead)
    parsed = isinstance(lines, Parsed)  # parse=json: objects' fields after their messages
    plain = not parsed and plain_text(texts)
    quote = '"' if plain else ""
    stream = {s: (quote + ',"stream":' + _encode_str(s) + "," + ctx.json_fragment + "}"
                  ).encode("utf-8", "replace") + end  # a label can hold a lone surrogate
              for s in set(sources)}
    fraction = _FRACTION_QUOTE if plain else _FRACTION
    return RecordColumns(
        heads=heads,
        nanos=list(map(mod, times, repeat(_NS))),
        messages=(texts if plain else lines.json_members() if isinstance(lines, Parsed)
                  else list(map(str.encode, map(_encode_str, map(_decode, texts))))),
        tails=([*stream.values()] * len(sources) if len(stream) == 1  # one stream: one object
               else list(map(stream.__getitem__, sources))),
        head_size=_same_size(date), fraction=fraction,
        tail_size=_same_size(stream.values()))


def _heads(times: list[int], lead: bytes) -> tuple[list[bytes], list[bytes]]:
    """Each line's head (``lead``, then the record's start up to its time's fraction), and the
    distinct heads: one per second, formatted once. A busy container's batch is mostly of one
    second: then, found by its earliest and latest time, no second is worked out a line."""
    def head(second: int) -> bytes:
        return lead + b'{"@timestamp":"' + time.strftime("%Y-%m-%dT%H:%M:%S.",
                                                         time.gmtime(second)).encode()
    if not times or min(times) // _NS == max(times) // _NS:
        one = [head(times[0] // _NS)] if times else []
        return one * len(times), one
    secs = list(map(floordiv, times, repeat(_NS)))
    date = {s: head(s) for s in set(secs)}
    return list(map(date.__getitem__, secs)), list(date.values())


def records(lines: Sequence[LogEntry], ctx: ContainerContext) -> list[str]:
    """Each line's record in its JSON form (one line of text each), from
    :func:`record_columns`: the same text as :func:`record_json` line by line."""
    cols = record_columns(lines, ctx)
    joined = map(b"".join, zip(cols.heads, cols.fractions, cols.messages, cols.tails))
    return list(map(methodcaller("decode"), joined))


def context_from_fields(fields: Mapping[str, Any]) -> ContainerContext:
    """Read back a context saved with ``fields()`` (``context.json`` in the store)."""
    container = fields.get("container", {})
    host = fields.get("host", {})
    ns = fields.get("pylog", {}).get("ns")
    namespaces = None
    if ns is not None:
        namespaces = {t: NamespaceView(t, v["inode"], v.get("id"), v["is_host"],
                                       tuple(v.get("shared_with", ())), v.get("key", ""))
                      for t, v in ns.items()}
    return ContainerContext(
        container_id=container.get("id", ""), name=container.get("name", ""),
        image_name=container.get("image", {}).get("name", ""),
        image_id=container.get("image", {}).get("id", ""),
        tag=fields.get("tag", ""), host_name=host.get("name", ""),
        labels=container.get("labels", {}), env=fields.get("pylog", {}).get("env", {}),
        pid=fields.get("process", {}).get("pid"), namespaces=namespaces,
        host_id=host.get("id", ""), boot_id=host.get("boot", {}).get("id", ""),
        host_pid_ns_ino=host.get("pid_ns_ino"), identity=fields.get("identity", "keys"),
        orchestration=fields.get("orchestration", {}))
