"""OpenTelemetry logs over OTLP/HTTP (protobuf or JSON), to a collector or any OTLP receiver.

Switched on by ``--log-opt otlp-endpoint=http(s)://host:4318`` (the base URL: ``/v1/logs`` is
appended, as for ``OTEL_EXPORTER_OTLP_ENDPOINT``). Headers (auth) come from pylog's own
environment, ``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_LOGS_HEADERS``, never from
log-opts. What the server answers decides what happens to a batch (the OTLP/HTTP spec):

- 2xx: taken; a ``partial_success`` with rejected records is counted and written to the
  dead-letter file (the answer does not say which records, so the row says how many and why);
- 429, 502, 503, 504: sent again by the delivery, after the ``Retry-After`` the server asked for
  if longer than the backoff;
- 413: the batch is halved until it fits (one line alone that is too big is refused);
- any other status: refused for good, each line written to the dead-letter file, counted as
  rejected in /metrics; never retried.

Connection errors and timeouts are retried like every sink's (the spool keeps the lines).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from ..options import parse_bool, parse_choice, parse_duration
from ..reassembly import Line
from ..record import ContainerContext
from .base import Sink, SinkConfig, SinkError
from .deadletter import DeadLetters
from .es_settings import parse_ca_cert
from .otlp_encode import content_type, dead_rows, error_text, partial_success, request_body
from .otlp_settings import (
    COMPRESSIONS,
    PROTOCOLS,
    RETRYABLE,
    env_headers,
    logs_url,
    parse_endpoint,
    retry_after,
    tls_context,
)

log = logging.getLogger(__name__)


class OtlpSink(Sink):
    KIND = "otlp"
    ADDRESS_OPTION = "otlp-endpoint"
    COLUMNS = True
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "otlp-endpoint": (parse_endpoint, None),
        "otlp-protocol": (parse_choice(PROTOCOLS), "http/protobuf"),
        "otlp-compression": (parse_choice(COMPRESSIONS), "gzip"),
        "otlp-timeout": (parse_duration, 10.0),
        "otlp-ca-cert": (parse_ca_cert, None),
        "otlp-tls-skip-verify": (parse_bool, False),
    }

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.url = logs_url(config["otlp-endpoint"])
        self.protocol: str = config["otlp-protocol"]
        self.compress = config["otlp-compression"] == "gzip"
        self.timeout = float(config["otlp-timeout"])
        self.ssl = tls_context(self.url, config["otlp-ca-cert"],
                               not config["otlp-tls-skip-verify"])
        self.headers = {**env_headers(), "content-type": content_type(self.protocol)}
        if self.compress:
            self.headers["content-encoding"] = "gzip"
        self.dead_letters = DeadLetters(state_dir / "dead-letter" / f"{self.key}.ndjson",
                                        self.key)
        self.accepted = 0  # records the server took
        self.partially_rejected = 0  # records a partial_success answer named as rejected
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def configure(cls, values: Any) -> SinkConfig | None:
        config = super().configure(values)
        if config is not None:
            env_headers()  # a malformed header variable fails docker run, naming it
        return config

    @property
    def target(self) -> str:
        return self.url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl if self.ssl is not None else False),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        if not lines:
            return
        body = await asyncio.to_thread(request_body, lines, ctx, self.protocol, self.compress)
        try:
            async with self._client().post(self.url, data=body, headers=self.headers) as resp:
                status, answer = resp.status, await resp.read()
                media = resp.headers.get("content-type", "")
                wait = retry_after(resp.headers.get("retry-after"))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise SinkError(f"POST {self.url}: {type(e).__name__}: {e}") from None
        if 200 <= status < 300:
            await self._taken(lines, ctx, answer, media)
        elif status in RETRYABLE:
            raise SinkError(f"POST {self.url}: {status} {error_text(answer, media)}",
                            retry_after=wait)
        elif status == 413 and len(lines) > 1:
            items = list(lines)  # Columns have no slices
            half = len(items) // 2
            await self.send(items[:half], ctx)
            await self.send(items[half:], ctx)
        else:
            await self._refused(lines, ctx, status, error_text(answer, media))

    async def _taken(self, lines: Sequence[Line], ctx: ContainerContext, answer: bytes,
                     media: str) -> None:
        rejected, message = partial_success(answer, media)
        rejected = min(rejected, len(lines))
        self.accepted += len(lines) - rejected
        if rejected:
            await self.dead_letters.append(
                [{"status": 200, "container_id": ctx.container_id,
                  "rejected_log_records": rejected, "error": message, "records": len(lines),
                  "first_time_unix_nano": lines[0].time_nano,
                  "last_time_unix_nano": lines[-1].time_nano}],
                f"the server rejected {rejected} of {len(lines)} records ({message[:100]!r})")
            self.partially_rejected += rejected
            self._reject(ctx, rejected)

    async def _refused(self, lines: Sequence[Line], ctx: ContainerContext, status: int,
                       error: str) -> None:
        await self.dead_letters.append(dead_rows(lines, ctx, status, error),
                                       f"the server refused {len(lines)} records for good "
                                       f"({status} {error[:100]!r})")
        self._reject(ctx, len(lines))

    def _reject(self, ctx: ContainerContext, n: int) -> None:
        self.rejected[ctx.container_id] = self.rejected.get(ctx.container_id, 0) + n

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
