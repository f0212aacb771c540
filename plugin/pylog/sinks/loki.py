"""Grafana Loki over its push API (``POST /loki/api/v1/push``): snappy-compressed protobuf by
default, JSON with ``loki-format=json``.

Switched on by ``--log-opt loki-url=http(s)://host:3100/loki/api/v1/push``, with the option
names of Loki's Docker driver where the concept is the same. Unlike that driver, a Loki that is
down never blocks the container (the lines wait in pylog's store), Docker's 16 KiB pieces arrive
joined, and the namespaces and other per-container fields go as structured metadata, not labels.
What Loki answers decides what happens to a push (docs/loki.md):

- 2xx: taken (Loki takes an exact duplicate — same stream, time and line — without a word);
- 429 and 5xx: sent again by the delivery with backoff (``loki-min-backoff`` doubling up to
  ``loki-max-backoff``), or after the answer's ``Retry-After`` if longer;
- 400 naming some entries ignored (out of order, too old, too long: "total ignored: N out of
  M"): Loki took the others; the N are counted as rejected and a row saying so goes to the
  dead-letter file;
- 413: halved; any other status: refused for good, every line dead-lettered and counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..errors import OptionError
from ..options import parse_bool, parse_choice, parse_duration, parse_positive_int
from ..reassembly import Line
from ..record import ContainerContext
from .base import SinkConfig
from .http_push import Answer, HttpPushSink, dead_rows, tls_context
from .loki_encode import push_bodies
from .loki_settings import (
    DEFAULT_EXTERNAL_LABELS,
    FORMATS,
    credentials,
    parse_external_labels,
    parse_file,
    parse_loki_url,
)

_IGNORED = re.compile(r"total ignored: (\d+) out of (\d+)")
_TENANT = re.compile(r"^[A-Za-z0-9!_.*'()-]{1,150}$")  # Loki's tenant ID characters


def parse_tenant(name: str, value: str) -> str:
    if not _TENANT.match(value) or value in (".", ".."):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: a tenant ID is 1-150 "
                          f"of the characters A-Z a-z 0-9 ! - _ . * ' ( )")
    return value


def parse_server_name(name: str, value: str) -> str:
    if not re.match(r"^[A-Za-z0-9.-]{1,253}$", value):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected a host name")
    return value


class LokiSink(HttpPushSink):
    KIND = "loki"
    ADDRESS_OPTION = "loki-url"
    COLUMNS = True
    RETRY_WAIT_OPTION = "loki-min-backoff"
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "loki-url": (parse_loki_url, None),
        "loki-format": (parse_choice(FORMATS), "protobuf"),
        "loki-tenant-id": (parse_tenant, None),
        "loki-batch-size": (parse_positive_int, 1 << 20),  # bytes of lines a push, as the driver
        "loki-timeout": (parse_duration, 10.0),
        "loki-external-labels": (parse_external_labels,
                                 parse_external_labels("", DEFAULT_EXTERNAL_LABELS)),
        "loki-min-backoff": (parse_duration, 0.5),
        "loki-max-backoff": (parse_duration, 10.0),
        "loki-tls-ca-file": (parse_file, None),
        "loki-tls-cert-file": (parse_file, None),
        "loki-tls-key-file": (parse_file, None),
        "loki-tls-server-name": (parse_server_name, None),
        "loki-tls-insecure-skip-verify": (parse_bool, False),
    }

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.url = config["loki-url"]
        self.json = config["loki-format"] == "json"
        self.batch_size = int(config["loki-batch-size"])
        self.timeout = float(config["loki-timeout"])
        self.external = config["loki-external-labels"]
        self._max_backoff = float(config["loki-max-backoff"])
        self.ssl = tls_context(self.url, config["loki-tls-ca-file"],
                               not config["loki-tls-insecure-skip-verify"],
                               config["loki-tls-cert-file"], config["loki-tls-key-file"])
        # loki-tls-server-name is the name each request checks (HttpPushSink.post)
        self.server_hostname = config["loki-tls-server-name"]
        self.headers = {"content-type": "application/json" if self.json
                        else "application/x-protobuf"}
        if self.json:
            self.headers["content-encoding"] = "gzip"
        if config["loki-tenant-id"]:
            self.headers["x-scope-orgid"] = config["loki-tenant-id"]
        auth = credentials()
        if auth:
            self.headers["authorization"] = auth
        self.ignored = 0  # entries Loki said it ignored (out of order, too old...)

    @classmethod
    def configure(cls, values: Any) -> SinkConfig | None:
        config = super().configure(values)
        if config is not None:
            credentials()  # half a credential pair fails docker run, naming the variables
            if (values.get("loki-tls-cert-file") is None) != (
                    values.get("loki-tls-key-file") is None):
                raise OptionError("log opts 'loki-tls-cert-file' and 'loki-tls-key-file' go "
                                  "together: one is not set")
        return config

    @property
    def max_retry_wait(self) -> float:
        return self._max_backoff

    def encode(self, lines: Sequence[Line], ctx: ContainerContext) -> list[tuple[int, bytes]]:
        return push_bodies(lines, ctx, self.external, self.json, self.batch_size)

    async def partly_taken(self, lines: Sequence[Line], ctx: ContainerContext,
                           answer: Answer, error: str) -> bool:
        if answer.status != 400:
            return False
        m = _IGNORED.search(answer.body.decode("utf-8", "replace"))
        if m is None:
            return False
        ignored = min(int(m.group(1)), len(lines))
        self.accepted += len(lines) - ignored
        self.ignored += ignored
        what = f"Loki ignored {ignored} of {len(lines)} entries ({error[:100]!r})"
        if ignored == len(lines):
            await self.dead_letters.append(dead_rows(lines, ctx, 400, error), what)
        else:  # which ones the answer does not say for each: one row with the count
            await self.dead_letters.append(
                [{"status": 400, "container_id": ctx.container_id, "ignored": ignored,
                  "records": len(lines), "error": error,
                  "first_time_unix_nano": lines[0].time_nano,
                  "last_time_unix_nano": lines[-1].time_nano}], what)
        self.reject(ctx, ignored)
        return True
