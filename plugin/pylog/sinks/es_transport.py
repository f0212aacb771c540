"""The Elasticsearch sink's requests and the server's answers: elasticsearch-py's transport
with plain JSON headers and pylog's auth, the usual ``_bulk`` answer found in its bytes, and
what a status or an error answer means."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import BytesPayload

from .base import SinkError
from .es_settings import DEFAULT_PORT, Credentials

# elastic_transport logs every request body at DEBUG (the containers' log lines, in pylog's own
# log) and a traceback at WARNING for every failover; pylog logs what matters itself.
logging.getLogger("elastic_transport").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- transport


class Transport(Protocol):
    credentials: Credentials

    async def request(self, method: str, path: str, body: bytes | None = None,
                      ndjson: bool = False) -> tuple[int, Any]:
        """The status and the decoded body; SinkError when no node answered."""

    async def close(self) -> None: ...


def _describe(e: BaseException) -> str:
    """A transport error in one line (node URLs and the cause; never request headers)."""
    text = str(e) or type(e).__name__
    errors = getattr(e, "errors", ())
    if errors:
        text += f" ({len(errors) + 1} tries)"
    return text


_CREATED = {"create": {"status": 201}}  # an item of a _bulk answer, with our filter_path
_ALL_CREATED_HEAD = b'{"errors":false,"items":['
_CREATED_ITEM = json.dumps(_CREATED, separators=(",", ":")).encode()  # as the server writes it


class AllCreated(int):
    """A ``_bulk`` answer in which every item is ``{"create":{"status":201}}``, found in its
    bytes instead of decoded: the number of items. It saves the quarter of the sink's CPU that
    decoding a million small items took (B1, bench/run.py)."""


def all_created(data: bytes) -> AllCreated | None:
    """The items of ``data`` when it is exactly the usual answer (compact, every item created,
    nothing else in it), else None. The check is a byte comparison with that answer built for
    the same count: exact, and a memcmp instead of a JSON decoder making two dicts per item."""
    if not data.startswith(_ALL_CREATED_HEAD):
        return None
    n = data.count(_CREATED_ITEM)
    if n == 0 or data != _ALL_CREATED_HEAD + b",".join(repeat(_CREATED_ITEM, n)) + b"]}":
        return None
    return AllCreated(n)


class BulkBody(BytesPayload):
    """A ``_bulk`` body, written to the connection a piece at a time (slices of it, no copy).

    Given the whole body, aiohttp joins its headers to it (a copy of the body, on Python before
    3.12.9) and the socket transport copies what the socket did not take at once (twice): on a
    6 MB request of short lines that was a tenth of the sink's CPU. A piece at a time, the
    socket takes each whole and nothing is copied in Python."""

    PIECE = 256 << 10

    def __init__(self, body: bytes) -> None:
        super().__init__(body, content_type="application/x-ndjson")

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        view = memoryview(self._value)[:content_length]
        for start in range(0, len(view), self.PIECE):
            await writer.write(view[start:start + self.PIECE])


def _serializers() -> dict[str, Any]:
    """elasticsearch-py's serializers, except that the usual ``_bulk`` answer comes out as
    :class:`AllCreated`, and a ``_bulk`` body, already bytes, is sent as it is (its NDJSON
    serializer copied it twice: ~0.9 GB per million lines). Made after the module is imported,
    which takes ~0.4 s."""
    from elasticsearch.serializer import JsonSerializer, NdjsonSerializer

    class BulkAnswerSerializer(JsonSerializer):
        def json_loads(self, data: bytes) -> Any:
            return all_created(data) or super().json_loads(data)

    class BulkBodySerializer(NdjsonSerializer):
        def dumps(self, data: Any) -> Any:
            if isinstance(data, BulkBody) or isinstance(data, bytes) and data.endswith(b"\n"):
                return data
            return super().dumps(data)

    return {"application/json": BulkAnswerSerializer(),
            "application/x-ndjson": BulkBodySerializer()}


def _make_client(urls: tuple[str, ...], ca_cert: str | None, verify: bool,
                 timeout: float) -> Any:
    es = importlib.import_module("elasticsearch")
    et = importlib.import_module("elastic_transport")
    nodes = []
    for url in urls:
        u = urlsplit(url)
        tls: dict[str, Any] = {}
        if u.scheme == "https":
            tls = {"verify_certs": verify, "ssl_show_warn": False}
            if ca_cert:
                tls["ca_certs"] = ca_cert
        nodes.append(et.NodeConfig(u.scheme, u.hostname or "", u.port or DEFAULT_PORT,
                                   path_prefix=u.path, request_timeout=timeout, **tls))
    return es.AsyncElasticsearch(hosts=nodes, randomize_nodes_in_pool=False, meta_header=False,
                                 serializers=_serializers())


class ElasticTransport:
    """elasticsearch-py's async transport (aiohttp) with plain JSON headers and our auth."""

    REQUEST_TIMEOUT = 30.0

    def __init__(self, client: Any, credentials: Credentials, nodes: int = 1) -> None:
        self.client = client
        self.credentials = credentials
        self._auth = credentials.header()
        # A request that fails on one node (refused, timed out, 502/503/504, 429) goes to the
        # next; each node is tried about once. (The client's own retry settings apply only to
        # its high-level API, so they are given with each request.)
        self.max_retries = nodes

    @classmethod
    async def create(cls, urls: tuple[str, ...], ca_cert: str | None, verify: bool,
                     credentials: Credentials) -> ElasticTransport:
        # Importing elasticsearch takes ~0.4 s and a TLS node loads its CA bundle: not on the
        # event loop, which reads the FIFOs. The client binds to the loop at its first request.
        client = await asyncio.to_thread(_make_client, urls, ca_cert, verify,
                                         cls.REQUEST_TIMEOUT)
        return cls(client, credentials, len(urls))

    async def request(self, method: str, path: str, body: bytes | None = None,
                      ndjson: bool = False) -> tuple[int, Any]:
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
        if self._auth:
            headers["authorization"] = self._auth
        try:
            resp = await self.client.transport.perform_request(
                method, path, body=BulkBody(body) if ndjson and body else body,
                headers=headers, max_retries=self.max_retries,
                retry_on_timeout=True)
        except Exception as e:  # noqa: BLE001 - refused, timeouts, TLS, undecodable answers...
            raise SinkError(f"{method} {path.split('?')[0]}: {_describe(e)}") from None
        return int(resp.meta.status), resp.body

    async def close(self) -> None:
        await self.client.close()


# ----------------------------------------------------------------------------- answers


def _reason(body: Any) -> str:
    """The server's error in one line, from an error answer or a bulk item's ``error``."""
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        text = f"{err.get('type', '?')}: {err.get('reason', '')}"
    else:
        text = str(err)
    return text[:300]


def _is_unsupported(body: Any) -> bool:
    return "unsupported" in _reason(body).lower() or "no handler" in _reason(body).lower()


def _item_outcome(status: int) -> str:
    if 200 <= status < 300:
        return "created"
    if status == 409:
        return "duplicate"
    if status == 429 or status >= 500:
        return "retry"
    if status in (401, 403, 404):
        return "blocked"  # credentials, a cluster block, a missing index: not the document
    return "rejected"


def bulk_items(body: Any, count: int) -> list[Any] | None:
    """The items of a 2xx ``_bulk`` answer to ``count`` documents, or None when every one was
    created; SinkError when the answer does not have an item per document."""
    items: list[Any] | None = None  # AllCreated: the usual answer, checked in its bytes
    if isinstance(body, AllCreated):
        n_items: int | None = int(body)
    else:
        items = body.get("items") if isinstance(body, dict) else None
        n_items = len(items) if isinstance(items, list) else None
    if n_items != count:
        raise SinkError(f"bulk answer has {'no' if n_items is None else n_items} items for "
                        f"{count} documents")
    # the usual answer, in its bytes or checked by one C call
    if items is None or items.count(_CREATED) == count:
        return None
    return items


@dataclass
class ItemOutcomes:
    """A ``_bulk`` answer's items sorted by what becomes of their documents (their places in the
    request), in the answer's order up to the first item without a status, if any."""

    created: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    rejected: list[tuple[int, int, Any]] = field(default_factory=list)  # place, status, error
    blocked: tuple[int, Any] | None = None  # the first one's status and item
    why: str = ""  # the last item to send again: its status and error
    malformed: str = ""  # an item without a status, where the sorting stopped

    @classmethod
    def of(cls, items: list[Any]) -> ItemOutcomes:
        out = cls()
        for i, item in enumerate(items):
            result = next(iter(item.values()), None) if isinstance(item, dict) else None
            if not isinstance(result, dict) or not isinstance(result.get("status"), int):
                out.malformed = f"bulk answer item without a status: {str(item)[:200]}"
                break
            st: int = result["status"]
            outcome = _item_outcome(st)
            if outcome == "created":
                out.created.append(i)
            elif outcome == "duplicate":
                out.duplicates.append(i)
            elif outcome == "retry":
                out.retry.append(i)
                out.why = f"{st} {_reason(result)}"
            elif outcome == "blocked":
                out.blocked = out.blocked or (st, result)
            else:
                out.rejected.append((i, st, result.get("error")))
        return out
