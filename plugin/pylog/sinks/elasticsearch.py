"""Elasticsearch (7, 8, 9) and OpenSearch over the ``_bulk`` API.

Records are the JSON form of :mod:`pylog.record` (``@timestamp`` with nine fractional digits,
``container.*``, ``pylog.ns.*``...). Requests go through elasticsearch-py's *transport layer*
(``AsyncElasticsearch(...).transport.perform_request``, aiohttp underneath, so nothing blocks the
event loop) with plain ``application/json`` / ``application/x-ndjson`` headers: the high-level
client sends ``compatible-with=<its major>`` and refuses servers without ``X-Elastic-Product``,
which would shut out Elasticsearch 7/8 and OpenSearch.

- **Index.** ``elasticsearch-index`` is either a data stream named ``logs-<dataset>-<namespace>``
  (the default, ``logs-pylog-default``) or a plain index name. On first use the sink installs an
  index template of priority 200 (the built-in ``logs-*-*`` one has 100) that maps ``@timestamp``
  as ``date_nanos``; for a data stream it then creates the stream. A server without data streams
  (osmem, say) gets the same template without ``data_stream`` and a plain index of that name; a
  server that refuses the template (no privilege, a clash) gets a warning and its own mappings.
- **Exactly once.** Every document is sent with ``create`` and an ``_id`` derived from the
  container ID, the line's time, stream and bytes, so a batch sent again (after a timeout, a
  crash, a retry) yields 409 duplicates, never second copies.
- **Every item is checked.** ``_bulk`` answers 200 when items failed. 2xx: created. 409: a
  duplicate, i.e. already there. 429 and 5xx: those items only are sent again with backoff, a few
  rounds, then :class:`SinkError` (the delivery retries the batch; what was settled is not sent
  again). 401/403/404 on items (credentials, cluster blocks, a missing index with auto-create off)
  are not the document's fault: SinkError, retried until fixed. Any other status rejects the
  document for good: it is counted and appended, with the server's error, to
  ``<state-dir>/dead-letter/<sink key>.ndjson`` (mode 0600) — never retried forever, never lost.
- **Credentials** are never log-opts (a log-opt is visible to whoever can ``docker inspect``):
  they are pylog's own settings, from its environment (``ELASTICSEARCH_USERNAME`` +
  ``ELASTICSEARCH_PASSWORD``, or ``ELASTICSEARCH_API_KEY``) or from a file named by
  ``ELASTICSEARCH_CREDENTIALS_FILE``; they are checked at ``docker run`` and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..options import Parser, parse_bool
from ..reassembly import Line
from ..record import ContainerContext
from .base import Sink, SinkConfig, SinkError, encode_off_loop
from .deadletter import append_file
from .es_documents import Docs, bulk_documents, chunks, document_ids
from .es_settings import (
    DEFAULT_INDEX,
    TEMPLATE_PRIORITY,
    Credentials,
    CredentialsError,
    index_template,
    is_data_stream,
    load_credentials,
    parse_ca_cert,
    parse_index,
    parse_urls,
    template_mappings,
)
from .es_transport import (
    AllCreated,
    ElasticTransport,
    ItemOutcomes,
    Transport,
    _is_unsupported,
    _reason,
    _serializers,
    all_created,
    bulk_items,
)

log = logging.getLogger(__name__)


class ElasticsearchSink(Sink):
    KIND = "elasticsearch"
    ADDRESS_OPTION = "elasticsearch-url"
    COLUMNS = True
    OPTIONS: ClassVar[dict[str, tuple[Parser, Any]]] = {
        "elasticsearch-url": (parse_urls, None),
        "elasticsearch-index": (parse_index, DEFAULT_INDEX),
        "elasticsearch-ca-cert": (parse_ca_cert, None),
        "elasticsearch-tls-skip-verify": (parse_bool, False),
    }
    BULK_MAX_BYTES = 8 << 20  # per _bulk request: a delivery batch of short lines (~6 MB) in one
    ITEM_RETRIES = 5  # rounds of re-sending 429/5xx items inside one send
    BATCHES_AT_ONCE = 2  # containers' batches encoded and in _bulk requests at the same time
    ITEM_RETRY_WAIT = 0.5  # seconds, doubled each round
    MAX_ITEM_RETRY_WAIT = 8.0

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.urls: tuple[str, ...] = tuple(config["elasticsearch-url"])
        self.index: str = config["elasticsearch-index"]
        self.data_stream = is_data_stream(self.index)
        self.ca_cert: str | None = config["elasticsearch-ca-cert"]
        self.verify = not config["elasticsearch-tls-skip-verify"]
        self.template_name = f"pylog-{self.index}"
        self.dead_letters = DeadLetterFile(state_dir / "dead-letter" / f"{self.key}.ndjson",
                                           self.key, self.index)
        self.transport: Transport | None = None
        self.setup_done = False
        self.setup_notes: list[str] = []  # what the server did not support, for the status
        self.created = 0
        self.duplicates = 0
        self.item_retries = 0
        self._reload_credentials = False
        self._setup_lock = asyncio.Lock()
        # Each batch's documents exist only while it is one of the BATCHES_AT_ONCE being sent:
        # the other containers' deliveries wait with their lines (a third of the peak RSS in
        # B2, 20 containers at once).
        self._batches = asyncio.Semaphore(self.BATCHES_AT_ONCE)
        # Per container: _ids settled (created, duplicate, dead-lettered) in a batch that then
        # failed, so that the delivery's retry of the batch does not send them again.
        self._settled: dict[str, Settled] = {}

    # ------------------------------------------------------------------ connection

    async def _transport(self) -> Transport:
        if self.transport is not None and not self._reload_credentials:
            return self.transport
        try:
            credentials = load_credentials()
        except CredentialsError as e:
            raise SinkError(f"Elasticsearch credential settings: {e}") from None
        self._reload_credentials = False
        if self.transport is not None:
            if getattr(self.transport, "credentials", None) == credentials:
                return self.transport
            log.info("sink %s: the credential settings changed; reconnecting", self.key)
            await self.transport.close()
            self.transport = None
        self.transport = await self.make_transport(credentials)
        log.info("sink %s: Elasticsearch at %s, index %s, credentials: %s", self.key,
                 ", ".join(self.urls), self.index, credentials.kind)
        return self.transport

    async def make_transport(self, credentials: Credentials) -> Transport:
        return await ElasticTransport.create(self.urls, self.ca_cert, self.verify, credentials)

    def _auth_failed(self, status: int, body: Any) -> SinkError:
        self._reload_credentials = True  # the settings may have changed (a rotated file)
        return SinkError(f"Elasticsearch refused pylog's credentials: {status} {_reason(body)}")

    # ------------------------------------------------------------------ first use

    async def _setup(self, t: Transport) -> None:
        async with self._setup_lock:
            if self.setup_done:
                return
            ds = await self._install_template(t, self.data_stream)
            if ds:
                status, body = await t.request("PUT", f"/_data_stream/{self.index}")
                if status in (401,):
                    raise self._auth_failed(status, body)
                if status == 429 or status >= 500:
                    raise SinkError(f"creating data stream {self.index}: {status} "
                                    f"{_reason(body)}")
                if 200 <= status < 300 or "already_exists" in _reason(body):
                    pass
                elif status in (404, 405) or (status == 400 and _is_unsupported(body)):
                    self._note(f"the server does not support data streams ({status} "
                               f"{_reason(body)}); writing to a plain index named {self.index} "
                               f"with the same mappings instead")
                    await self._install_template(t, False)
                else:
                    log.warning("sink %s: could not create data stream %s (%d %s); documents "
                                "will create it if the server allows", self.key, self.index,
                                status, _reason(body))
            self.setup_done = True

    async def _install_template(self, t: Transport, data_stream: bool) -> bool:
        """PUT the template; whether a data stream template is in place."""
        body = json.dumps(index_template(self.index, data_stream)).encode()
        status, answer = await t.request("PUT", f"/_index_template/{self.template_name}", body)
        if status == 400 and "_meta" in _reason(answer):
            plain = index_template(self.index, data_stream)
            del plain["_meta"]
            status, answer = await t.request("PUT", f"/_index_template/{self.template_name}",
                                             json.dumps(plain).encode())
        if 200 <= status < 300:
            log.info("sink %s: index template %s installed (priority %d, @timestamp as "
                     "date_nanos%s)", self.key, self.template_name, TEMPLATE_PRIORITY,
                     ", data stream" if data_stream else "")
            return data_stream
        if status == 400 and data_stream and "data_stream" in _reason(answer):
            self._note(f"the server does not know data stream templates ({_reason(answer)}); "
                       f"writing to a plain index named {self.index} instead")
            return await self._install_template(t, False)
        if status == 401:
            raise self._auth_failed(status, answer)
        if status == 429 or status >= 500:
            raise SinkError(f"installing index template {self.template_name}: {status} "
                            f"{_reason(answer)}")
        if status in (404, 405):  # no composable templates (Elasticsearch before 7.8)
            legacy = {"index_patterns": [self.index], "order": TEMPLATE_PRIORITY,
                      "mappings": template_mappings()}
            status, answer = await t.request("PUT", f"/_template/{self.template_name}",
                                             json.dumps(legacy).encode())
            if 200 <= status < 300:
                self._note("the server has no composable index templates; installed a legacy "
                           "template (no data stream)")
                return False
        self._note(f"could not install index template {self.template_name} ({status} "
                   f"{_reason(answer)}); the server's own templates and mappings apply "
                   f"(@timestamp may be kept in milliseconds only)")
        return False

    def _note(self, text: str) -> None:
        self.setup_notes.append(text)
        log.warning("sink %s: %s", self.key, text)

    # ------------------------------------------------------------------ sending

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        if not lines:
            return
        t = await self._transport()
        if not self.setup_done:
            await self._setup(t)
        async with self._batches:
            docs = await encode_off_loop(bulk_documents, lines, ctx)
            settled = self._settled.setdefault(ctx.container_id, Settled())
            pending = docs
            if settled:
                known = settled.resolved()
                pending = docs.pick([i for i, d in enumerate(docs.ids) if d not in known])
            rounds = 0
            while pending:
                retry: list[Docs] = []
                last = ""
                for chunk in chunks(pending, self.BULK_MAX_BYTES):
                    again, why = await self._bulk(t, chunk, settled, ctx.container_id)
                    retry.append(again)
                    last = why or last
                pending = Docs.concat(retry)
                if not pending:
                    break
                rounds += 1
                self.item_retries += len(pending)
                if rounds > self.ITEM_RETRIES:
                    raise SinkError(f"{len(pending)} of {len(docs)} documents still not taken "
                                    f"after {rounds} tries: {last}")
                await asyncio.sleep(min(self.ITEM_RETRY_WAIT * 2 ** (rounds - 1),
                                        self.MAX_ITEM_RETRY_WAIT))  # backoff before re-sending
            self._settled.pop(ctx.container_id, None)

    async def _bulk(self, t: Transport, chunk: Docs, settled: Settled,
                    container_id: str = "") -> tuple[Docs, str]:
        """One _bulk request; returns the documents to send again (429/5xx; none: empty) and
        why."""
        path = f"/{self.index}/_bulk?filter_path=errors,items.*.status,items.*.error"
        status, body = await t.request("POST", path, chunk.body(), ndjson=True)
        if status == 413:  # too big for the server (or a proxy in front of it)
            return await self._too_large(t, chunk, body, settled, container_id)
        if status == 429 or status >= 500:
            return chunk, f"{status} {_reason(body)}"
        if status == 401:
            raise self._auth_failed(status, body)
        if not 200 <= status < 300:
            raise SinkError(f"bulk request refused: {status} {_reason(body)}")
        items = bulk_items(body, len(chunk))
        if items is None:
            self.created += len(chunk)
            settled.add_whole(chunk.ids)
            return chunk[:0], ""
        return await self._settle(chunk, ItemOutcomes.of(items), settled, container_id)

    async def _too_large(self, t: Transport, chunk: Docs, body: Any, settled: Settled,
                         container_id: str) -> tuple[Docs, str]:
        """A 413: each half sent on its own; a single document is dead-lettered."""
        if len(chunk) > 1:
            half = len(chunk) // 2
            a, why_a = await self._bulk(t, chunk[:half], settled, container_id)
            b, why_b = await self._bulk(t, chunk[half:], settled, container_id)
            return Docs.concat([a, b]), why_a or why_b
        await self._dead_letter(chunk, [(0, 413, {"type": "request_entity_too_large",
                                                  "reason": _reason(body)})], settled,
                                container_id)
        return chunk[:0], ""

    async def _settle(self, chunk: Docs, out: ItemOutcomes, settled: Settled,
                      container_id: str) -> tuple[Docs, str]:
        """Counts and settles what the server took, dead-letters what it rejected; returns the
        documents to send again and why."""
        self.created += len(out.created)
        self.duplicates += len(out.duplicates)
        settled.update(chunk.ids[i] for i in out.created + out.duplicates)
        if out.malformed:
            raise SinkError(out.malformed)
        if out.rejected:
            await self._dead_letter(chunk, out.rejected, settled, container_id)
        if out.blocked is not None:
            if out.blocked[0] == 401:
                raise self._auth_failed(*out.blocked)
            raise SinkError(f"Elasticsearch refused documents: {out.blocked[0]} "
                            f"{_reason(out.blocked[1])}")
        return chunk.pick(out.retry), out.why

    async def _dead_letter(self, chunk: Docs, rejected: list[tuple[int, int, Any]],
                           settled: Settled, container_id: str = "") -> None:
        """Keep rejected documents (their places in ``chunk``) in the dead-letter file; only then
        are they settled."""
        await self.dead_letters.append(chunk, rejected)
        settled.update(chunk.ids[i] for i, _, _ in rejected)
        self.rejected[container_id] = self.rejected.get(container_id, 0) + len(rejected)

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            try:
                await transport.close()
            except Exception as e:  # noqa: BLE001 - closing must not fail shutdown
                log.debug("sink %s: closing the transport: %s", self.key, e)


class Settled:
    """The _ids of one container's batch that the server has settled (created, duplicate,
    dead-lettered): only a batch that then fails needs them, when the delivery sends it again.
    A request taken whole is kept as its list of ids, made a set only then (hashing every id
    of every request cost 3% of the sink's CPU, B1)."""

    __slots__ = ("ids", "whole")

    def __init__(self) -> None:
        self.ids: set[bytes] = set()
        self.whole: list[list[bytes]] = []

    def add_whole(self, ids: list[bytes]) -> None:
        self.whole.append(ids)

    def update(self, ids: Iterable[bytes]) -> None:
        self.ids.update(ids)

    def resolved(self) -> set[bytes]:
        for ids in self.whole:
            self.ids.update(ids)
        self.whole.clear()
        return self.ids

    def __bool__(self) -> bool:
        return bool(self.ids) or any(self.whole)


class DeadLetterFile:
    """Where a sink keeps the documents the server rejected for good, with its errors: appended
    as NDJSON rows (0600), counted and logged."""

    def __init__(self, path: Path, sink_key: str, index: str) -> None:
        self.path = path
        self.sink_key = sink_key
        self.index = index
        self.count = 0  # documents appended by this sink instance

    async def append(self, chunk: Docs, rejected: list[tuple[int, int, Any]]) -> None:
        """Append ``rejected`` (place in ``chunk``, status, error); SinkError if it cannot."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out = []
        for i, status, error in rejected:
            doc = chunk[i]
            try:
                document: Any = json.loads(doc.source)
            except ValueError:
                document = doc.source
            out.append(json.dumps({"time": now, "sink": self.sink_key, "index": self.index,
                                   "_id": doc.id, "status": status, "error": error,
                                   "document": document}, ensure_ascii=False) + "\n")
        data = "".join(out).encode("utf-8", "replace")
        try:
            await asyncio.to_thread(append_file, self.path, data)  # disk I/O: off the loop
        except OSError as e:
            raise SinkError(f"{len(rejected)} documents were rejected and could not be kept "
                            f"in {self.path}: {e.strerror or e}") from None
        self.count += len(rejected)
        first_status, first_error = rejected[0][1], rejected[0][2]
        log.warning("sink %s: Elasticsearch rejected %d documents (first: %d %s); appended to "
                    "%s (%d so far)", self.sink_key, len(rejected), first_status,
                    _reason(first_error).split(":")[0], self.path, self.count)


# What other modules, the tests and the benchmark import from here (the sink's parts live in
# es_settings, es_documents and es_transport).
__all__ = ["DEFAULT_INDEX", "AllCreated", "Credentials", "CredentialsError", "Docs",
           "ElasticTransport", "ElasticsearchSink", "Transport", "_serializers", "all_created",
           "bulk_documents", "chunks", "document_ids", "index_template", "load_credentials",
           "parse_ca_cert", "parse_index", "parse_urls", "template_mappings"]
