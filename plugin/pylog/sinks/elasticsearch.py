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
import base64
import hashlib
import importlib
import json
import logging
import os
import re
import ssl
import stat
import struct
import time
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from ..errors import OptionError
from ..frames import columns_of
from ..options import Parser, parse_bool
from ..reassembly import Line
from ..record import ContainerContext, record_columns
from .base import Sink, SinkConfig, SinkError

log = logging.getLogger(__name__)

DEFAULT_INDEX = "logs-pylog-default"
DEFAULT_PORT = 9200
TEMPLATE_PRIORITY = 200  # above the built-in logs-*-* template (100)

ENV_USERNAME = "ELASTICSEARCH_USERNAME"
ENV_PASSWORD = "ELASTICSEARCH_PASSWORD"
ENV_API_KEY = "ELASTICSEARCH_API_KEY"
ENV_CREDENTIALS_FILE = "ELASTICSEARCH_CREDENTIALS_FILE"

# elastic_transport logs every request body at DEBUG (the containers' log lines, in pylog's own
# log) and a traceback at WARNING for every failover; pylog logs what matters itself.
logging.getLogger("elastic_transport").setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- credentials


class CredentialsError(ValueError):
    """pylog's Elasticsearch credential settings are unusable (the message never has a secret)."""


@dataclass(frozen=True)
class Credentials:
    """Basic auth or an API key, with where they came from. ``repr`` shows no secret."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    source: str = "none"

    @property
    def kind(self) -> str:
        return "api key" if self.api_key else "basic" if self.username else "none"

    def header(self) -> str | None:
        """The Authorization header's value, or None."""
        if self.api_key:
            key = self.api_key
            if ":" in key:  # "id:api_key", as the create-API-key answer lists them
                key = base64.b64encode(key.encode()).decode()
            return f"ApiKey {key}"
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None


_FILE_KEYS = {"username": "username", "password": "password", "api_key": "api_key",
              "apikey": "api_key", ENV_USERNAME.lower(): "username",
              ENV_PASSWORD.lower(): "password", ENV_API_KEY.lower(): "api_key"}


def _read_credentials_file(path_text: str) -> dict[str, str]:
    """``key=value`` lines (``username``, ``password``, ``api_key``); ``#`` comments."""
    path = Path(path_text)
    if not path.is_absolute():
        raise CredentialsError(f"{ENV_CREDENTIALS_FILE} must be an absolute path")
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise CredentialsError(f"cannot read {ENV_CREDENTIALS_FILE} {path}: {reason}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the Elasticsearch credentials file %s can be read by other users "
                    "(mode %o); chmod 600 it", path, stat.S_IMODE(st.st_mode))
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        name = _FILE_KEYS.get(key.strip().lower())
        if not sep:
            # The line may be a bare secret: say where, never what.
            raise CredentialsError(f"{path} line {number}: expected key=value "
                                   f"(username, password or api_key)")
        if name is None:
            raise CredentialsError(f"{path} line {number}: unknown key {key.strip()[:40]!r} "
                                   f"(expected username, password or api_key)")
        values[name] = value.strip()
    return values


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials pylog's settings give, checked; raises CredentialsError."""
    env = os.environ if environ is None else environ
    file_name = env.get(ENV_CREDENTIALS_FILE, "")
    direct = [n for n in (ENV_USERNAME, ENV_PASSWORD, ENV_API_KEY) if env.get(n)]
    if file_name:
        if direct:
            raise CredentialsError(f"both {ENV_CREDENTIALS_FILE} and {', '.join(direct)} are "
                                   f"set; use one or the other")
        values = _read_credentials_file(file_name)
        source = f"file {file_name}"
    else:
        values = {"username": env.get(ENV_USERNAME, ""), "password": env.get(ENV_PASSWORD, ""),
                  "api_key": env.get(ENV_API_KEY, "")}
        source = "environment"
    username = values.get("username") or None
    password = values.get("password") or None
    api_key = values.get("api_key") or None
    where = f"in {source}"
    if api_key and (username or password):
        raise CredentialsError(f"an API key and a username/password are both set {where}; "
                               f"use one or the other")
    if username and not password:
        raise CredentialsError(f"a username but no password is set {where}")
    if password and not username:
        raise CredentialsError(f"a password but no username is set {where}")
    if username and ":" in username:
        raise CredentialsError(f"the username set {where} contains ':', which basic auth "
                               f"cannot carry")
    if not (api_key or username):
        return Credentials(source="none")
    return Credentials(username=username, password=password, api_key=api_key, source=source)


# ----------------------------------------------------------------------------- options


def _url_error(name: str, value: str, why: str) -> OptionError:
    return OptionError(f"invalid value {value!r} for log opt {name!r}: {why}")


def parse_urls(name: str, value: str) -> tuple[str, ...]:
    """One or more comma-separated ``http(s)://host[:port][/path]`` nodes of one cluster,
    normalised (port 9200 when none). Also checks pylog's credential settings, so that a
    broken setting fails ``docker run`` rather than every delivery."""
    if "@" in value:
        # Never echo the value: it probably holds a password.
        raise OptionError(
            f"invalid value for log opt {name!r}: credentials must not be part of the URL (a "
            f"log-opt is visible to anyone who can run docker inspect); set {ENV_USERNAME} and "
            f"{ENV_PASSWORD}, {ENV_API_KEY} or {ENV_CREDENTIALS_FILE} for pylog instead")
    urls = []
    for part in value.split(","):
        text = part.strip()
        if not text:
            raise _url_error(name, value, "an empty URL in the list")
        try:
            u = urlsplit(text)
            port = u.port
        except ValueError as e:
            raise _url_error(name, value, f"{text!r}: bad port or host ({e})") from None
        if port == 0:
            raise _url_error(name, value, f"{text!r}: bad port 0")
        if u.scheme not in ("http", "https"):
            raise _url_error(name, value, f"{text!r}: the scheme must be http:// or https://")
        if not u.hostname:
            raise _url_error(name, value, f"{text!r}: no host")
        if u.query or u.fragment:
            raise _url_error(name, value, f"{text!r}: a query or fragment is not allowed")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        path = u.path.rstrip("/")
        urls.append(f"{u.scheme}://{host}:{port or DEFAULT_PORT}{path}")
    try:
        load_credentials()
    except CredentialsError as e:
        raise OptionError(f"log opt {name!r}: pylog's Elasticsearch credential settings are "
                          f"unusable: {e}") from None
    return tuple(urls)


_DS_PART = re.compile(r"[a-z0-9_.]+")  # no '-' inside the parts (the naming scheme)
_PLAIN_INDEX = re.compile(r"[a-z0-9][a-z0-9._-]*")


def is_data_stream(index: str) -> bool:
    return index.startswith("logs-")


def parse_index(name: str, value: str) -> str:
    """``logs-<dataset>-<namespace>`` (a data stream) or a plain index name."""
    if value.startswith("logs-"):
        parts = value.split("-")
        if len(parts) != 3 or not all(_DS_PART.fullmatch(p) for p in parts[1:]) or \
                len(parts[1]) > 100 or len(parts[2]) > 100:
            raise OptionError(
                f"invalid value {value!r} for log opt {name!r}: a name starting with logs- is a "
                f"data stream and must be logs-<dataset>-<namespace>, each part lowercase "
                f"letters, digits, '_' or '.' without '-' (e.g. logs-pylog-default)")
        return value
    if not _PLAIN_INDEX.fullmatch(value) or len(value.encode()) > 255 or value in (".", ".."):
        raise OptionError(
            f"invalid value {value!r} for log opt {name!r}: expected a data stream "
            f"logs-<dataset>-<namespace> or an index name of lowercase letters, digits, '.', "
            f"'_' and '-' that starts with a letter or digit")
    return value


def parse_ca_cert(name: str, value: str) -> str:
    """A PEM file of CA certificates, by absolute path (loaded now to check it)."""
    if not os.path.isabs(value):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected an absolute "
                          f"path to a PEM file of CA certificates")
    try:
        ssl.create_default_context(cafile=value)
    except FileNotFoundError:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: no such file") from None
    except (OSError, ssl.SSLError) as e:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: cannot load it as PEM "
                          f"CA certificates: {e}") from None
    return value


# ----------------------------------------------------------------------------- documents


def index_template(index: str, data_stream: bool) -> dict[str, Any]:
    """The composable index template installed for the index (or data stream)."""
    body: dict[str, Any] = {
        "index_patterns": [index],
        "priority": TEMPLATE_PRIORITY,
        "template": {"mappings": template_mappings()},
        "_meta": {"managed_by": "pylog", "description": "pylog log records"},
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def template_mappings() -> dict[str, Any]:
    keyword = {"type": "keyword", "ignore_above": 1024}
    return {
        "dynamic_templates": [
            {"pylog_ns_inode": {"path_match": "pylog.ns.*.inode", "mapping": {"type": "long"}}},
            {"pylog_ns_id": {"path_match": "pylog.ns.*.id", "mapping": {"type": "long"}}},
            {"pylog_ns_is_host": {"path_match": "pylog.ns.*.is_host",
                                  "mapping": {"type": "boolean"}}},
            {"pylog_ns_shared_with": {"path_match": "pylog.ns.*.shared_with",
                                      "mapping": keyword}},
            {"container_labels": {"path_match": "container.labels.*",
                                  "match_mapping_type": "string", "mapping": keyword}},
            {"pylog_env": {"path_match": "pylog.env.*", "match_mapping_type": "string",
                           "mapping": keyword}},
        ],
        "properties": {
            "@timestamp": {"type": "date_nanos"},
            "message": {"type": "text"},
            "stream": keyword,
            "tag": keyword,
            "container": {"properties": {
                "id": keyword, "name": keyword,
                "image": {"properties": {"name": keyword, "id": keyword}},
                "labels": {"type": "object"},
            }},
            "host": {"properties": {"name": keyword}},
            "process": {"properties": {"pid": {"type": "long"}}},
            "pylog": {"properties": {"env": {"type": "object"}, "ns": {"type": "object"}}},
        },
    }


_ID_HEAD = struct.Struct(">q")
_blake2b = hashlib.blake2b


def document_ids(lines: Sequence[Line], container_id: str) -> list[bytes]:
    """A deterministic ``_id`` per line (ASCII bytes): a hash of the container ID, the time, the
    stream and the bytes (identical lines with the same nanosecond in one batch get ``.1``,
    ``.2``...).

    A column at a time, as the records are: the hashed bytes joined by a C call mapped over the
    batch, the digests of a batch base64-encoded as one string, then cut every 20 characters
    (15 bytes encode to 20 characters without padding). The hash itself is one comprehension
    step a line: ``blake2b(key, digest_size=15)`` through ``functools.partial`` and ``digest``
    through ``methodcaller`` were each slower (0.73 -> 0.64 us a line). It is still the
    sink's biggest cost (half of its CPU in bench/RESULTS.md's profile): the price of ids
    that make a batch sent again meet 409 whatever path it took."""
    sources, times, texts = columns_of(lines)
    stream = {s: s.encode() + b"\0" for s in set(sources)}
    keys = map(b"".join, zip(repeat(container_id.encode()), map(_ID_HEAD.pack, times),
                             map(stream.__getitem__, sources), texts))
    text = base64.urlsafe_b64encode(b"".join([_blake2b(k, digest_size=15).digest()
                                              for k in keys]))
    # cut every 20 bytes by one struct call (its format cached by the struct module): 0.12 ->
    # 0.02 us a line against a slice object and a getitem per id
    ids = list(struct.unpack("20s" * len(sources), text))
    if len(set(ids)) == len(ids):
        return ids
    seen: dict[bytes, int] = {}
    for i, doc_id in enumerate(ids):
        n = seen.get(doc_id)
        if n is None:
            seen[doc_id] = 0
        else:
            seen[doc_id] = n + 1
            ids[i] = b"%s.%d" % (doc_id, n + 1)
    return ids


class Doc(tuple[str, str]):
    """One document of a ``_bulk`` request, on its own: ``(id, payload)``, the payload being the
    action line and the record line, each ending with ``\n``. For the rare paths (rejected
    documents, tests); requests are made from :class:`Docs`' parts."""

    __slots__ = ()

    @property
    def id(self) -> str:
        return self[0]

    @property
    def payload(self) -> str:
        return self[1]

    @property
    def source(self) -> str:
        """The record alone (its JSON text)."""
        return self[1][self[1].index("\n") + 1:-1]


_ACTION = b'{"create":{"_id":"'
_AFTER_ID = b'"}}\n'
PARTS = 6  # of a document in Docs.parts: action, id, then the record's four columns


class Docs(Sequence[Doc]):
    """Documents of ``_bulk`` requests as the parts of their bytes, :data:`PARTS` per document:
    ``{"create":{"_id":"``, the id, then the record's columns (:func:`record_columns`), the first
    starting with ``"}}\n`` and the last ending with ``\n``. A request's body is one join of
    its documents' parts, and the size of each document is known without making it (``ends``:
    the running total), so no per-document string is ever made: see :func:`record_columns` for
    what that buys. ``docs[i]`` is document i as a :class:`Doc`; a slice is a Docs."""

    __slots__ = ("base", "ends", "ids", "parts")

    def __init__(self, ids: list[bytes], parts: list[bytes], ends: list[int],
                 base: int = 0) -> None:
        self.ids = ids        # each document's _id
        self.parts = parts    # PARTS per document
        self.ends = ends      # bytes up to the end of each document, from ``base``
        self.base = base

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self.ids))
            if step != 1:
                raise ValueError("Docs slices are contiguous")
            stop = max(start, stop)
            return Docs(self.ids[start:stop], self.parts[PARTS * start:PARTS * stop],
                        self.ends[start:stop], self.ends[start - 1] if start else self.base)
        doc_id = self.ids[i]  # IndexError out of range, as a sequence does
        i %= len(self.ids)
        body = b"".join(self.parts[PARTS * i:PARTS * i + PARTS]).decode("utf-8", "replace")
        return Doc((doc_id.decode(), body))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Docs):
            return NotImplemented
        return self.ids == other.ids and self.body() == other.body()

    __hash__ = None  # type: ignore[assignment]

    def sizes(self) -> list[int]:
        """Each document's size in bytes."""
        return [b - a for a, b in zip([self.base, *self.ends], self.ends)]

    def body(self) -> bytes:
        """The ``_bulk`` request body of these documents."""
        return b"".join(self.parts)

    def pick(self, indices: Sequence[int]) -> Docs:
        """These documents, in this order."""
        parts: list[bytes] = []
        for i in indices:
            parts += self.parts[PARTS * i:PARTS * i + PARTS]
        sizes = self.sizes()
        return Docs([self.ids[i] for i in indices], parts,
                    list(accumulate(sizes[i] for i in indices)))

    @classmethod
    def concat(cls, many: Sequence[Docs]) -> Docs:
        if len(many) == 1:
            return many[0]
        ids: list[bytes] = []
        parts: list[bytes] = []
        sizes: list[int] = []
        for d in many:
            ids += d.ids
            parts += d.parts
            sizes += d.sizes()
        return cls(ids, parts, list(accumulate(sizes)))


def bulk_documents(lines: Sequence[Line], ctx: ContainerContext) -> Docs:
    """Each line as a ``create`` action plus its record, ready for ``_bulk``."""
    ids = document_ids(lines, ctx.container_id)
    cols = record_columns(lines, ctx, lead=_AFTER_ID, end=b"\n")
    n = len(ids)
    parts: list[bytes] = [b""] * (PARTS * n)
    parts[0::PARTS] = repeat(_ACTION, n)
    parts[1::PARTS] = ids
    parts[2::PARTS] = cols.heads
    parts[3::PARTS] = cols.fractions
    parts[4::PARTS] = cols.messages
    parts[5::PARTS] = cols.tails
    sizes = map(add, map(len, ids), map(add, cols.sizes(), repeat(len(_ACTION))))
    return Docs(ids, parts, list(accumulate(sizes)))


def chunks(docs: Docs, max_bytes: int) -> list[Docs]:
    """Bulk requests of at most ``max_bytes`` (a bigger document goes alone); each request's
    end found by bisecting the running total of the sizes, not by a step per document."""
    ends = docs.ends
    out: list[Docs] = []
    start, done = 0, docs.base  # first document of the request, bytes before it
    while start < len(docs):
        end = max(start + 1, bisect_right(ends, done + max_bytes, lo=start))
        out.append(docs[start:end])
        start, done = end, ends[end - 1]
    return out


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
    bytes instead of decoded: the number of items. Decoding the usual answer (a million items
    for a million lines) cost 1.5 of the Elasticsearch sink's ~6 CPU-s per million lines."""


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
        def dumps(self, data: Any) -> bytes:
            if isinstance(data, bytes) and data.endswith(b"\n"):
                return data
            return super().dumps(data)

    return {"application/json": BulkAnswerSerializer(),
            "application/x-ndjson": BulkBodySerializer()}


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
        # Importing elasticsearch takes ~0.4 s: not on the event loop, which reads the FIFOs.
        es = await asyncio.to_thread(importlib.import_module, "elasticsearch")
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
                                       path_prefix=u.path, request_timeout=cls.REQUEST_TIMEOUT,
                                       **tls))
        client = es.AsyncElasticsearch(
            hosts=nodes, randomize_nodes_in_pool=False, meta_header=False,
            serializers=_serializers())
        return cls(client, credentials, len(nodes))

    async def request(self, method: str, path: str, body: bytes | None = None,
                      ndjson: bool = False) -> tuple[int, Any]:
        headers = {"accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
        if self._auth:
            headers["authorization"] = self._auth
        try:
            resp = await self.client.transport.perform_request(
                method, path, body=body, headers=headers, max_retries=self.max_retries,
                retry_on_timeout=True)
        except Exception as e:  # noqa: BLE001 - refused, timeouts, TLS, undecodable answers...
            raise SinkError(f"{method} {path.split('?')[0]}: {_describe(e)}") from None
        return int(resp.meta.status), resp.body

    async def close(self) -> None:
        await self.client.close()


# ----------------------------------------------------------------------------- the sink


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
    BULK_MAX_BYTES = 5 << 20  # per _bulk request
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
        self.dead_letter_path = state_dir / "dead-letter" / f"{self.key}.ndjson"
        self.transport: Transport | None = None
        self.setup_done = False
        self.setup_notes: list[str] = []  # what the server did not support, for the status
        self.created = 0
        self.duplicates = 0
        self.dead_lettered = 0
        self.item_retries = 0
        self._reload_credentials = False
        self._setup_lock = asyncio.Lock()
        # Each batch's documents exist only while it is one of the BATCHES_AT_ONCE being sent:
        # the other containers' deliveries wait with their lines (B2, 20 containers: pylog's
        # peak RSS 559 -> 195 MB).
        self._batches = asyncio.Semaphore(self.BATCHES_AT_ONCE)
        # Per container: _ids settled (created, duplicate, dead-lettered) in a batch that then
        # failed, so that the delivery's retry of the batch does not send them again.
        self._settled: dict[str, set[bytes]] = {}

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
            docs = bulk_documents(lines, ctx)
            settled = self._settled.setdefault(ctx.container_id, set())
            pending = docs
            if settled:
                pending = docs.pick([i for i, d in enumerate(docs.ids) if d not in settled])
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

    async def _bulk(self, t: Transport, chunk: Docs, settled: set[bytes],
                    container_id: str = "") -> tuple[Docs, str]:
        """One _bulk request; returns the documents to send again (429/5xx; none: empty) and
        why."""
        path = f"/{self.index}/_bulk?filter_path=errors,items.*.status,items.*.error"
        status, body = await t.request("POST", path, chunk.body(), ndjson=True)
        if status == 413:  # too big for the server (or a proxy in front of it): halve it
            if len(chunk) > 1:
                half = len(chunk) // 2
                a, why_a = await self._bulk(t, chunk[:half], settled, container_id)
                b, why_b = await self._bulk(t, chunk[half:], settled, container_id)
                return Docs.concat([a, b]), why_a or why_b
            await self._dead_letter(chunk, [(0, status, {"type": "request_entity_too_large",
                                                         "reason": _reason(body)})], settled,
                                    container_id)
            return chunk[:0], ""
        if status == 429 or status >= 500:
            return chunk, f"{status} {_reason(body)}"
        if status == 401:
            raise self._auth_failed(status, body)
        if not 200 <= status < 300:
            raise SinkError(f"bulk request refused: {status} {_reason(body)}")
        items: Any = None  # AllCreated: the usual answer, already checked in its bytes
        if isinstance(body, AllCreated):
            n_items: int | None = int(body)
        else:
            items = body.get("items") if isinstance(body, dict) else None
            n_items = len(items) if isinstance(items, list) else None
        if n_items != len(chunk):
            raise SinkError(f"bulk answer has {'no' if n_items is None else n_items} items for "
                            f"{len(chunk)} documents")
        # the usual answer, in its bytes or checked by one C call
        if items is None or items.count(_CREATED) == len(chunk):
            self.created += len(chunk)
            settled.update(chunk.ids)
            return chunk[:0], ""
        retry: list[int] = []
        rejected: list[tuple[int, int, Any]] = []
        blocked: tuple[int, Any] | None = None
        why = ""
        for i, item in enumerate(items):
            result = next(iter(item.values()), None) if isinstance(item, dict) else None
            if not isinstance(result, dict) or not isinstance(result.get("status"), int):
                raise SinkError(f"bulk answer item without a status: {str(item)[:200]}")
            st: int = result["status"]
            outcome = _item_outcome(st)
            if outcome == "created":
                self.created += 1
                settled.add(chunk.ids[i])
            elif outcome == "duplicate":
                self.duplicates += 1
                settled.add(chunk.ids[i])
            elif outcome == "retry":
                retry.append(i)
                why = f"{st} {_reason(result)}"
            elif outcome == "blocked":
                blocked = blocked or (st, result)
            else:
                rejected.append((i, st, result.get("error")))
        if rejected:
            await self._dead_letter(chunk, rejected, settled, container_id)
        if blocked is not None:
            if blocked[0] == 401:
                raise self._auth_failed(*blocked)
            raise SinkError(f"Elasticsearch refused documents: {blocked[0]} "
                            f"{_reason(blocked[1])}")
        return chunk.pick(retry), why

    async def _dead_letter(self, chunk: Docs, rejected: list[tuple[int, int, Any]],
                           settled: set[bytes], container_id: str = "") -> None:
        """Append rejected documents (their places in ``chunk``) with their errors; only then
        are they settled."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out = []
        for i, status, error in rejected:
            doc = chunk[i]
            try:
                document: Any = json.loads(doc.source)
            except ValueError:
                document = doc.source
            out.append(json.dumps({"time": now, "sink": self.key, "index": self.index,
                                   "_id": doc.id, "status": status, "error": error,
                                   "document": document}, ensure_ascii=False) + "\n")
        data = "".join(out).encode("utf-8", "replace")
        try:
            await asyncio.to_thread(_append, self.dead_letter_path, data)  # disk I/O: off the loop
        except OSError as e:
            raise SinkError(f"{len(rejected)} documents were rejected and could not be kept "
                            f"in {self.dead_letter_path}: {e.strerror or e}") from None
        settled.update(chunk.ids[i] for i, _, _ in rejected)
        self.dead_lettered += len(rejected)
        self.rejected[container_id] = self.rejected.get(container_id, 0) + len(rejected)
        first_status, first_error = rejected[0][1], rejected[0][2]
        log.warning("sink %s: Elasticsearch rejected %d documents (first: %d %s); appended to "
                    "%s (%d so far)", self.key, len(rejected), first_status,
                    _reason(first_error).split(":")[0], self.dead_letter_path,
                    self.dead_lettered)

    async def close(self) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            try:
                await transport.close()
            except Exception as e:  # noqa: BLE001 - closing must not fail shutdown
                log.debug("sink %s: closing the transport: %s", self.key, e)


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` (created 0600, its directory 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


__all__ = ["Credentials", "CredentialsError", "ElasticsearchSink", "bulk_documents", "chunks",
           "document_ids", "index_template", "load_credentials", "parse_ca_cert", "parse_index",
           "parse_urls"]
