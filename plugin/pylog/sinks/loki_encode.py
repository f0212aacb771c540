"""Loki push requests from a container's lines: few stream labels (the host, the user's external
labels — ``container_name`` by default —, compose or swarm service and project, the stream as
``source``) and everything else per container as structured metadata (Loki 3), never as labels:
an inode or a container ID as a label would make a new stream per container run. Protobuf
(Loki's ``logproto.PushRequest``) compressed with snappy, or Loki's JSON, gzipped. See
docs/loki.md for the mapping to the JSON record."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import cramjam

from ..frames import columns_of
from ..jsonlines import Parsed
from ..protowire import field, utf8, varint
from ..reassembly import Line
from ..record import ContainerContext
from ..tag import render_tag

_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")
ENTRY_OVERHEAD = 24  # bytes a pushed entry takes besides its line and metadata (time, framing)


def _name(text: str) -> str:
    """A Loki label (or structured metadata) name: other characters made ``_``."""
    name = _NOT_NAME.sub("_", text)
    return name if name[:1].isalpha() or name[:1] == "_" else "_" + name


def stream_labels(ctx: ContainerContext, external: Sequence[tuple[str, str]],
                  source: str) -> dict[str, str]:
    info = {"ContainerID": ctx.container_id, "ContainerName": "/" + ctx.name,
            "ContainerImageName": ctx.image_name, "ContainerImageID": ctx.image_id}
    labels = {name: render_tag(template, info) for name, template in external}
    labels.update(ctx.orchestration)
    labels["host"] = ctx.host_name
    labels["source"] = source
    return {k: v for k, v in labels.items() if v}


def label_text(labels: dict[str, str]) -> str:
    """Prometheus' form, as the push API's ``labels`` wants it: ``{a="x", b="y"}``."""
    return "{" + ", ".join(f'{k}={json.dumps(v, ensure_ascii=False)}'
                           for k, v in sorted(labels.items())) + "}"


def structured_metadata(ctx: ContainerContext) -> dict[str, str]:
    """Per container: the ID, image, pid, selected labels and env, each namespace's key (with
    ``identity=full`` also inodes, ids, host and boot ids), as Loki structured metadata."""
    out = {"container_id": ctx.container_id, "image_name": ctx.image_name, "tag": ctx.tag}
    if ctx.pid is not None:
        out["pid"] = str(ctx.pid)
    for key, value in sorted(ctx.labels.items()):
        out[_name(f"label_{key}")] = value
    for key, value in sorted(ctx.env.items()):
        out[_name(f"env_{key}")] = value
    views = sorted((ctx.namespaces or {}).items())
    for t, v in views:
        out[f"ns_{t}"] = v.key or f"ino{v.inode}"
        if v.shared_with:
            out[f"ns_{t}_shared"] = ",".join(v.shared_with)
    if views:
        out["host_ns"] = ",".join(t for t, v in views if v.is_host)
    if ctx.identity == "full":
        out.update({"image_id": ctx.image_id, "host_id": ctx.host_id, "boot_id": ctx.boot_id})
        for t, v in views:
            out[f"ns_{t}_inode"] = str(v.inode)
            if v.id is not None:
                out[f"ns_{t}_id"] = str(v.id)
    return {k: v for k, v in out.items() if v}


def _parts(texts: list[bytes], per_entry: int, max_bytes: int,
           levels: list[str | None] | None = None) -> Iterator[tuple[int, int]]:
    """The batch cut into pushes of about ``max_bytes`` (a line bigger alone): (start, end)."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        level = levels[i] if levels is not None else None
        cost = len(text) + per_entry + (len(level) + 9 if level else 0)  # "level" metadata
        if i > start and size + cost > max_bytes:
            yield start, i
            start, size = i, 0
        size += cost
    if start < len(texts):
        yield start, len(texts)


def push_bodies(lines: Sequence[Line], ctx: ContainerContext,
                external: Sequence[tuple[str, str]], json_format: bool, max_bytes: int
                ) -> list[tuple[int, bytes]]:
    """The request bodies of a batch, each with its count of lines: snappy-compressed protobuf,
    or gzipped JSON; a stream (labels) per source in each, entries in the batch's order. A line
    that was a JSON object (``parse=json``) is sent as written, with its level as a ``level``
    structured metadata entry."""
    meta = structured_metadata(ctx)
    per_entry = ENTRY_OVERHEAD + sum(len(k) + len(v) + 4 for k, v in meta.items())
    all_sources, all_times, all_texts = columns_of(lines)
    all_levels = lines.levels if isinstance(lines, Parsed) else None
    out = []
    for start, end in _parts(all_texts, per_entry, max_bytes, all_levels):
        sources, times, texts = all_sources[start:end], all_times[start:end], all_texts[start:end]
        levels = all_levels[start:end] if all_levels is not None else None
        by_source: dict[str, list[int]] = {}
        for i, s in enumerate(sources):
            by_source.setdefault(s, []).append(i)
        labels = {s: stream_labels(ctx, external, s) for s in by_source}
        if json_format:
            body = gzip.compress(_json_body(by_source, labels, times, texts, meta, levels), 1)
        else:
            body = bytes(cramjam.snappy.compress_raw(
                _proto_body(by_source, labels, times, texts, meta, levels)))
        out.append((len(texts), body))
    return out


def _proto_body(by_source: dict[str, list[int]], labels: dict[str, dict[str, str]],
                times: list[int], texts: list[bytes], meta: dict[str, str],
                levels: list[str | None] | None = None) -> bytes:
    """``logproto.PushRequest`` written field by field: the structured metadata, the same on
    every entry, is encoded once and appended to each (the message classes copy it into every
    entry; tests/test_sink_loki.py checks the bytes against them). The Timestamp's seconds
    part is made once a second."""
    tail = b"".join(field(0x1A, field(0x0A, k.encode()) + field(0x12, v.encode()))
                    for k, v in meta.items())
    lines = utf8(texts)
    seconds: dict[int, bytes] = {}
    streams = []
    for s, idx in by_source.items():
        entries = []
        for i in idx:
            secs, nanos = divmod(times[i], 1_000_000_000)
            head = seconds.get(secs)
            if head is None:
                head = seconds[secs] = b"\x08" + varint(secs)
            ts = head + b"\x10" + varint(nanos) if nanos else head
            line = lines[i]
            entry = b"\x0a" + varint(len(ts)) + ts + b"\x12" + varint(len(line)) + line + tail
            level = levels[i] if levels is not None else None
            if level:
                entry += field(0x1A, field(0x0A, b"level") + field(0x12, level.encode()))
            entries.append(b"\x12" + varint(len(entry)) + entry)
        streams.append(field(0x0A, field(0x0A, label_text(labels[s]).encode())
                             + b"".join(entries)))
    return b"".join(streams)


def _json_body(by_source: dict[str, list[int]], labels: dict[str, dict[str, str]],
               times: list[int], texts: list[bytes], meta: dict[str, str],
               levels: list[str | None] | None = None) -> bytes:
    def meta_of(i: int) -> dict[str, str]:
        level = levels[i] if levels is not None else None
        return {**meta, "level": level} if level else meta

    streams: list[dict[str, Any]] = []
    for s, idx in by_source.items():
        streams.append({"stream": labels[s], "values": [
            [str(times[i]), texts[i].decode("utf-8", "replace"), meta_of(i)] for i in idx]})
    return json.dumps({"streams": streams}, ensure_ascii=False,
                      separators=(",", ":")).encode()
