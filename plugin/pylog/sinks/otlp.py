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

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..options import parse_bool, parse_choice, parse_duration
from ..reassembly import Line
from ..record import ContainerContext
from .base import SinkConfig
from .es_settings import parse_ca_cert
from .http_push import Answer, HttpPushSink, tls_context
from .otlp_encode import content_type, error_text, partial_success, request_body
from .otlp_settings import (
    COMPRESSIONS,
    PROTOCOLS,
    RETRYABLE,
    env_headers,
    logs_url,
    parse_endpoint,
)


class OtlpSink(HttpPushSink):
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
        self.partially_rejected = 0  # records a partial_success answer named as rejected

    @classmethod
    def configure(cls, values: Any) -> SinkConfig | None:
        config = super().configure(values)
        if config is not None:
            env_headers()  # a malformed header variable fails docker run, naming it
        return config

    def encode(self, lines: Sequence[Line], ctx: ContainerContext) -> list[tuple[int, bytes]]:
        return [(len(lines), request_body(lines, ctx, self.protocol, self.compress))]

    def retryable(self, status: int) -> bool:
        return status in RETRYABLE

    def error_text(self, answer: Answer) -> str:
        return error_text(answer.body, answer.media)

    async def taken(self, lines: Sequence[Line], ctx: ContainerContext, answer: Answer) -> None:
        rejected, message = partial_success(answer.body, answer.media)
        rejected = min(rejected, len(lines))
        self.accepted += len(lines) - rejected
        if rejected:
            await self.dead_letters.append(
                [{"status": answer.status, "container_id": ctx.container_id,
                  "rejected_log_records": rejected, "error": message, "records": len(lines),
                  "first_time_unix_nano": lines[0].time_nano,
                  "last_time_unix_nano": lines[-1].time_nano}],
                f"the server rejected {rejected} of {len(lines)} records ({message[:100]!r})")
            self.partially_rejected += rejected
            self.reject(ctx, rejected)
