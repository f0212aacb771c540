"""What the sinks that push batches over HTTP share (OTLP, Loki): one aiohttp session per sink
with its TLS context and timeout, the encoding in a worker, the answer's status sorted into
taken / send again (with the server's Retry-After) / too large (halved) / refused for good
(dead-lettered and counted), so that each such sink is its encoder and its reading of a 2xx or
a 400."""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp

from ..frames import columns_of, slice_of
from ..reassembly import Line
from ..record import ContainerContext
from .base import Sink, SinkConfig, SinkError, encode_off_loop
from .deadletter import DeadLetters


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    media: str  # the answer's content type
    retry_after: float | None  # seconds, from a Retry-After header


def tls_context(url: str, ca: str | None, verify: bool, cert: str | None = None,
                key: str | None = None) -> ssl.SSLContext | None:
    """None for http; else verified against the system's CAs or ``ca`` unless ``verify`` is
    off, with a client certificate if ``cert`` (and its ``key``) are given."""
    if not url.startswith("https:"):
        return None
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date); None if absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def dead_rows(lines: Sequence[Line], ctx: ContainerContext, status: int, error: str
              ) -> list[dict[str, Any]]:
    """The dead-letter rows of refused lines: each with its time and stream."""
    sources, times, texts = columns_of(lines)
    return [{"status": status, "error": error, "container_id": ctx.container_id,
             "time_unix_nano": t, "stream": s, "body": text.decode("utf-8", "replace")}
            for s, t, text in zip(sources, times, texts)]


class HttpPushSink(Sink):
    """Subclasses set ``url``, ``headers``, ``timeout``, ``ssl`` and implement :meth:`encode`
    (in a worker), :meth:`retryable`, :meth:`taken` (a 2xx) and may override
    :meth:`partly_taken` (a 4xx that took some lines, as Loki's out-of-order answers)."""

    url: str
    headers: dict[str, str]
    timeout: float
    ssl: ssl.SSLContext | None = None
    server_hostname: str | None = None  # the name to check the server's certificate against

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.dead_letters = DeadLetters(state_dir / "dead-letter" / f"{config.key}.ndjson",
                                        config.key)
        self.accepted = 0  # lines the server took
        self._session: aiohttp.ClientSession | None = None

    @property
    def target(self) -> str:
        return self.url

    def encode(self, lines: Sequence[Line], ctx: ContainerContext) -> list[tuple[int, bytes]]:
        """The request bodies of a batch, each with how many of its lines (in order) it holds:
        one, unless the batch is over the sink's request size. CPU that grows with the batch:
        run in a worker."""
        raise NotImplementedError

    def retryable(self, status: int) -> bool:
        return status == 429 or status >= 500

    async def taken(self, lines: Sequence[Line], ctx: ContainerContext, answer: Answer) -> None:
        self.accepted += len(lines)

    async def partly_taken(self, lines: Sequence[Line], ctx: ContainerContext,
                           answer: Answer, error: str) -> bool:
        """A refusal that took some of the lines (True: handled); False: refused whole."""
        return False

    def error_text(self, answer: Answer) -> str:
        return " ".join(answer.body[:300].decode("utf-8", "replace").split())

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl if self.ssl is not None else False),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def post(self, body: bytes) -> Answer:
        try:
            async with self._client().post(self.url, data=body, headers=self.headers,
                                           server_hostname=self.server_hostname) as resp:
                return Answer(resp.status, await resp.read(),
                              resp.headers.get("content-type", ""),
                              retry_after(resp.headers.get("retry-after")))
        except (TimeoutError, aiohttp.ClientError) as e:
            raise SinkError(f"POST {self.url}: {type(e).__name__}: {e}") from None

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        if not lines:
            return
        bodies = await encode_off_loop(self.encode, lines, ctx)
        if len(bodies) == 1:
            await self._push(lines, ctx, bodies[0][1])
            return
        start = 0  # parts taken stay taken if a later one fails: a retry sends them again
        for count, body in bodies:
            await self._push(slice_of(lines, start, start + count), ctx, body)
            start += count

    async def _push(self, lines: Sequence[Line], ctx: ContainerContext, body: bytes) -> None:
        answer = await self.post(body)
        if 200 <= answer.status < 300:
            await self.taken(lines, ctx, answer)
        elif self.retryable(answer.status):
            raise SinkError(f"POST {self.url}: {answer.status} {self.error_text(answer)}",
                            retry_after=answer.retry_after)
        elif answer.status == 413 and len(lines) > 1:
            half = len(lines) // 2  # each half encoded again as what it is (parsed, say)
            await self.send(slice_of(lines, 0, half), ctx)
            await self.send(slice_of(lines, half, len(lines)), ctx)
        elif not await self.partly_taken(lines, ctx, answer, self.error_text(answer)):
            await self.refused(lines, ctx, answer.status, self.error_text(answer))

    async def refused(self, lines: Sequence[Line], ctx: ContainerContext, status: int,
                      error: str) -> None:
        await self.dead_letters.append(dead_rows(lines, ctx, status, error),
                                       f"the server refused {len(lines)} records for good "
                                       f"({status} {error[:100]!r})")
        self.reject(ctx, len(lines))

    def reject(self, ctx: ContainerContext, n: int) -> None:
        self.rejected[ctx.container_id] = self.rejected.get(ctx.container_id, 0) + n

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
