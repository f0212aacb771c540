"""What every sink is: an encoder plus a request. Queues, spooling, retry and backoff are not
here: they are shared machinery (:mod:`pylog.delivery`), so a new sink is one file.

A sink is switched on for a container by its address option (``fluentd-address=...``); its
other options are validated with the rest at StartLogging. Containers with the same sink
options share one sink instance (one connection).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..frames import columns_of
from ..options import Parser
from ..reassembly import Line
from ..record import ContainerContext

T = TypeVar("T")
# A batch this small is encoded on the event loop: it costs less there than a worker's handoff
SMALL_LINES = 64
SMALL_BYTES = 64 << 10


class SinkError(Exception):
    """A batch was not delivered; the delivery retries it with backoff, waiting at least
    ``retry_after`` seconds when the server asked for that (a 429's or 503's Retry-After)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SinkConfig:
    """One sink's options for one container (only its own options, defaults filled in)."""

    kind: str
    values: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        """Stable across restarts: names the sink's cursor files."""
        digest = hashlib.sha256(repr(self.values).encode()).hexdigest()[:12]
        return f"{self.kind}-{digest}"

    def __getitem__(self, name: str) -> Any:
        return dict(self.values)[name]


@dataclass
class SinkStatus:
    state: str = "up"  # up | retrying
    last_error: str = ""
    last_success: float = 0.0  # wall time of the last batch taken (0: none yet)
    failures: int = 0  # consecutive
    delivered_lines: int = 0
    retries: int = 0
    failing_since: float = 0.0  # wall time of the first failure of the current outage (0: up)


class Sink:
    """Base class. Subclasses set ``KIND``, ``ADDRESS_OPTION``, ``OPTIONS`` and implement
    :meth:`send` (deliver every line or raise SinkError) and :meth:`close`."""

    KIND: ClassVar[str]
    ADDRESS_OPTION: ClassVar[str]
    OPTIONS: ClassVar[dict[str, tuple[Parser, Any]]]
    # Backoff between retries of one batch: RETRY_WAIT * 2**n, at most MAX_RETRY_WAIT seconds.
    RETRY_WAIT_OPTION: ClassVar[str | None] = None
    # Takes whole lines as :class:`pylog.frames.Columns` (one list per field) besides LogEntry
    # lists: the delivery then decodes a batch without an object per line.
    COLUMNS: ClassVar[bool] = False
    # parse=json objects may be a learned shape's structs (pylog.jsonshapes): the sink encodes
    # them as they are (msgspec), not through Parsed.fields.
    PACKS_STRUCTS: ClassVar[bool] = False
    MAX_RETRY_WAIT: ClassVar[float] = 10.0

    def __init__(self, config: SinkConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.status = SinkStatus()
        # Lines refused for good, per container ID (Elasticsearch's dead-lettered documents);
        # a delivery takes its container's count when it ends.
        self.rejected: dict[str, int] = {}

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def target(self) -> str:
        """Where the sink sends, for people (no credentials: the options never hold any)."""
        value = self.config[self.ADDRESS_OPTION]
        if isinstance(value, (tuple, list)):
            return ",".join(str(v) for v in value)
        return str(value)

    @property
    def max_retry_wait(self) -> float:
        """The backoff's cap, in seconds."""
        return self.MAX_RETRY_WAIT

    @property
    def retry_wait(self) -> float:
        if self.RETRY_WAIT_OPTION is None:
            return 1.0
        return float(self.config[self.RETRY_WAIT_OPTION])

    def prepare(self, lines: Sequence[Line], ctx: ContainerContext) -> Sequence[Line]:
        """A batch as the container's rules left it, in the worker that applied them: a sink
        may encode it there, off the event loop and while its objects are fresh, and return
        the lines with their encoding for :meth:`send`. By default the lines as they are."""
        return lines

    async def send(self, lines: Sequence[Line], ctx: ContainerContext) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def note_success(self, lines: int) -> None:
        self.status.state = "up"
        self.status.failures = 0
        self.status.failing_since = 0.0
        self.status.last_success = time.time()
        self.status.delivered_lines += lines

    def note_failure(self, error: BaseException) -> None:
        if self.status.failures == 0:
            self.status.failing_since = time.time()
        self.status.state = "retrying"
        self.status.failures += 1
        self.status.retries += 1
        self.status.last_error = f"{type(error).__name__}: {error}"

    @classmethod
    def configure(cls, values: Mapping[str, Any]) -> SinkConfig | None:
        """This sink's config from a container's parsed log-opts; None if it is not switched on."""
        if values.get(cls.ADDRESS_OPTION) is None:
            return None
        return SinkConfig(cls.KIND, tuple(sorted((k, values[k]) for k in cls.OPTIONS)))


async def encode_off_loop(encode: Callable[..., T], lines: Sequence[Line], *args: Any) -> T:
    """``encode(lines, *args)``: in a worker, since encoding costs a step per line and the
    event loop only moves bytes; a small batch (a container writing now and then) where it is."""
    if len(lines) <= SMALL_LINES and sum(map(len, columns_of(lines)[2])) <= SMALL_BYTES:
        return encode(lines, *args)
    return await asyncio.to_thread(encode, lines, *args)
