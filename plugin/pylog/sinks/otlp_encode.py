"""OTLP logs requests from a container's lines, with the ``opentelemetry-proto`` messages: one
``ResourceLogs`` per container, its attributes from the semantic conventions plus the
namespace identity under ``pylog.ns.``; one ``LogRecord`` per whole line. See docs/otlp.md for
the mapping to the JSON record."""

from __future__ import annotations

import gzip
import json
import struct
import time
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import __version__
from ..frames import columns_of
from ..jsonlines import Parsed, otel_severity
from ..protowire import field, utf8, varint
from ..reassembly import Line
from ..record import ContainerContext

SCOPE = InstrumentationScope(name="pylog", version=__version__)
GZIP_LEVEL = 1  # a collector's receiver pays for every byte; level 1 takes most of the gain


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if -(1 << 63) <= value < 1 << 63:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))  # JSON's big integers do not fit an int64
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(
            values=[KeyValue(key=str(k), value=any_value(v)) for k, v in value.items()]))
    if value is None:
        return AnyValue()  # JSON's null: an AnyValue with no value set
    return AnyValue(string_value=str(value))


def resource_attributes(ctx: ContainerContext) -> dict[str, Any]:
    """The container's attributes, sent once per request (so the whole identity, whatever
    ``identity`` says: it costs nothing per line here)."""
    out: dict[str, Any] = {"container.id": ctx.container_id, "container.name": ctx.name,
                           "container.image.name": ctx.image_name}
    if ctx.image_id:
        out["container.image.id"] = ctx.image_id
    for key, value in sorted(ctx.labels.items()):
        out[f"container.label.{key}"] = value
    out["host.name"] = ctx.host_name
    if ctx.host_id:
        out["host.id"] = ctx.host_id
    if ctx.pid is not None:
        out["process.pid"] = ctx.pid
    out["pylog.tag"] = ctx.tag
    if ctx.boot_id:
        out["pylog.host.boot_id"] = ctx.boot_id
    if ctx.host_pid_ns_ino is not None:
        out["pylog.host.pid_ns_ino"] = ctx.host_pid_ns_ino
    for key, value in sorted(ctx.env.items()):
        out[f"pylog.env.{key}"] = value
    for t, view in sorted((ctx.namespaces or {}).items()):
        for name, value in view.fields().items():
            out[f"pylog.ns.{t}.{name}"] = value
    return out


def export_request(lines: Sequence[Line], ctx: ContainerContext,
                   observed_ns: int | None = None) -> ExportLogsServiceRequest:
    """The request for one container's batch: each line's time, the time pylog handed it on
    (``observed_time_unix_nano``, one for the batch), the whole line as the body, its stream
    as ``log.iostream``. No severity: a stream says nothing of it (docs/otlp.md). A time
    before 1970 (none comes from dockerd) is sent as 0: the field is unsigned."""
    observed = time.time_ns() if observed_ns is None else observed_ns
    sources, times, texts = columns_of(lines)
    streams = {s: [KeyValue(key="log.iostream", value=AnyValue(string_value=s))]
               for s in set(sources)}
    records = [LogRecord(time_unix_nano=max(t, 0), observed_time_unix_nano=observed,
                         body=AnyValue(string_value=text.decode("utf-8", "replace")),
                         attributes=streams[s])
               for s, t, text in zip(sources, times, texts)]
    if isinstance(lines, Parsed):  # parse=json: an object as the body, a map
        for i, record in enumerate(records):
            whole, level = lines.whole(i), lines.levels[i]
            if whole is not None:
                record.body.CopyFrom(any_value(whole))
            if level is not None:
                record.severity_text = level
                record.severity_number = otel_severity(level)  # type: ignore[assignment]
    resource = Resource(attributes=[KeyValue(key=k, value=any_value(v))
                                    for k, v in resource_attributes(ctx).items()])
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=resource, scope_logs=[ScopeLogs(scope=SCOPE, log_records=records)])])


def encode(request: ExportLogsServiceRequest, protocol: str, compress: bool) -> bytes:
    """The request body (protobuf, or OTLP/JSON: lowerCamelCase names, enums as numbers),
    gzipped if ``compress``. CPU that grows with the batch: call it in a worker."""
    if protocol == "http/json":
        data = json.dumps(json_format.MessageToDict(request, use_integers_for_enums=True),
                          separators=(",", ":"), ensure_ascii=False).encode()
    else:
        data = request.SerializeToString()
    return gzip.compress(data, GZIP_LEVEL) if compress else data


def request_body(lines: Sequence[Line], ctx: ContainerContext, protocol: str,
                 compress: bool) -> bytes:
    """The request's body for a worker to make: protobuf written by :func:`protobuf_request`,
    OTLP/JSON through the message classes (:func:`export_request`, :func:`encode`)."""
    if protocol == "http/json":
        return encode(export_request(lines, ctx), protocol, compress)
    data = protobuf_request(lines, ctx)
    return gzip.compress(data, GZIP_LEVEL) if compress else data


_FIXED64 = struct.Struct("<Q")


def protobuf_request(lines: Sequence[Line], ctx: ContainerContext,
                     observed_ns: int | None = None) -> bytes:
    """:func:`export_request` serialized, with each LogRecord written field by field (time,
    body, ``log.iostream``, observed time) and the rest by the classes: a fifth of the CPU of
    a LogRecord object a line (bench/bench_delivery.py); tests/test_sink_otlp.py parses it
    with the classes and compares."""
    if isinstance(lines, Parsed):  # objects as bodies: through the classes
        data: bytes = export_request(lines, ctx, observed_ns).SerializeToString()
        return data
    observed = time.time_ns() if observed_ns is None else observed_ns
    sources, times, texts = columns_of(lines)
    tail = {s: field(0x32, KeyValue(key="log.iostream", value=AnyValue(string_value=s))
                     .SerializeToString()) + b"\x59" + _FIXED64.pack(observed)
            for s in set(sources)}
    records = []
    for s, t, text in zip(sources, times, utf8(texts)):
        body = b"\x0a" + varint(len(text)) + text  # AnyValue.string_value
        rec = b"\x09" + _FIXED64.pack(max(t, 0)) + b"\x2a" + varint(len(body)) \
            + body + tail[s]
        records.append(b"\x12" + varint(len(rec)) + rec)  # ScopeLogs.log_records
    resource = Resource(attributes=[KeyValue(key=k, value=any_value(v))
                                    for k, v in resource_attributes(ctx).items()])
    scope_logs = field(0x0A, SCOPE.SerializeToString()) + b"".join(records)
    resource_logs = field(0x0A, resource.SerializeToString()) + field(0x12, scope_logs)
    return field(0x0A, resource_logs)


def content_type(protocol: str) -> str:
    return "application/json" if protocol == "http/json" else "application/x-protobuf"


def partial_success(body: bytes, media: str) -> tuple[int, str]:
    """Rejected records and the server's message from a 2xx answer (0, "" when it has none or
    cannot be read: the records were accepted)."""
    if not body:
        return 0, ""
    resp = ExportLogsServiceResponse()
    try:
        if "json" in media:
            json_format.Parse(body.decode("utf-8", "replace"), resp, ignore_unknown_fields=True)
        else:
            resp.ParseFromString(body)
    except (json_format.ParseError, ValueError, Exception):  # noqa: BLE001 - any bad body
        return 0, ""
    p = resp.partial_success
    return int(p.rejected_log_records), p.error_message


def error_text(body: bytes, media: str) -> str:
    """The server's reason for a refusal, in a line: a google.rpc.Status' message (what OTLP
    servers answer errors with), else the start of the body."""
    message = _status_message(body) if "protobuf" in media else None
    if message:
        return message[:300]
    text = body[:300].decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            return str(parsed["message"])[:300]
    except ValueError:
        pass
    return " ".join(text.split())


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _status_message(body: bytes) -> str | None:
    """Field 2 (``message``) of a google.rpc.Status, read off the wire (its module is not a
    dependency); None if the body is not one."""
    pos, message = 0, None
    try:
        while pos < len(body):
            key, pos = _varint(body, pos)
            wire = key & 7
            if wire == 0:
                _, pos = _varint(body, pos)
            elif wire == 2:
                size, pos = _varint(body, pos)
                if key >> 3 == 2:
                    message = body[pos:pos + size].decode("utf-8", "replace")
                pos += size
            else:
                return None
    except IndexError:
        return None
    return message if pos == len(body) else None
