"""The sinks pylog forwards records to, and the registry that switches them on per container.

Adding a sink: a module with a :class:`~pylog.sinks.base.Sink` subclass, and one line in
``SINK_TYPES`` below. Its options are validated with the others at StartLogging.
"""

from __future__ import annotations

from pathlib import Path

from ..options import OPTION_GROUPS, LogOptions
from .base import Sink, SinkConfig, SinkError
from .elasticsearch import ElasticsearchSink
from .fluentd import FluentdSink
from .loki import LokiSink
from .otlp import OtlpSink
from .syslog import SyslogSink

SINK_TYPES: dict[str, type[Sink]] = {
    FluentdSink.KIND: FluentdSink,
    ElasticsearchSink.KIND: ElasticsearchSink,
    SyslogSink.KIND: SyslogSink,
    OtlpSink.KIND: OtlpSink,
    LokiSink.KIND: LokiSink,
}
for _cls in SINK_TYPES.values():
    OPTION_GROUPS[_cls.KIND] = _cls.OPTIONS


def configured_sinks(options: LogOptions) -> list[SinkConfig]:
    """The sinks a container's log-opts switch on (each by its address option)."""
    out = []
    for cls in SINK_TYPES.values():
        config = cls.configure(options.values)
        if config is not None:
            out.append(config)
    return out


class SinkPool:
    """One sink instance per distinct configuration, shared by the containers that use it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.sinks: dict[str, Sink] = {}
        self._users: dict[str, int] = {}

    def acquire(self, config: SinkConfig) -> Sink:
        sink = self.sinks.get(config.key)
        if sink is None:
            sink = self.sinks[config.key] = SINK_TYPES[config.kind](config, self.state_dir)
        self._users[config.key] = self._users.get(config.key, 0) + 1
        return sink

    async def release(self, sink: Sink) -> None:
        if sink.key not in self._users:
            return  # the pool was closed already
        self._users[sink.key] -= 1
        if self._users[sink.key] == 0:
            del self._users[sink.key]
            del self.sinks[sink.key]
            await sink.close()

    async def close(self) -> None:
        for sink in list(self.sinks.values()):
            await sink.close()
        self.sinks.clear()
        self._users.clear()


__all__ = ["SINK_TYPES", "Sink", "SinkConfig", "SinkError", "SinkPool", "configured_sinks"]
