"""``parse=json``: a line that is a JSON object reaches the sinks as fields, not one string.

The object's fields go under one key (``json``), so none can collide with the record's own;
its message, level and time (the first of ``parse-message-keys``, ``parse-level-keys``,
``parse-time-keys`` present; by default ``msg``/``message``, ``level``/``severity``,
``time``/``ts``) are taken out into the record's ``message``, ``log.level`` and ``log.time``
(the time as the line wrote it: ``@timestamp`` stays dockerd's). A line that is not a JSON
object, or is larger than ``parse-max-bytes`` or nested deeper than :data:`MAX_DEPTH`, is sent
as text, as without the option, and counted. The store keeps the line as written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .reassembly import Line

MAX_DEPTH = 32  # objects and arrays inside each other; deeper lines are sent as text


@dataclass(frozen=True)
class ParseRules:
    message_keys: tuple[str, ...] = ("msg", "message")
    level_keys: tuple[str, ...] = ("level", "severity")
    time_keys: tuple[str, ...] = ("time", "ts")
    max_bytes: int = 64 << 10


def parse_rules(values: Any) -> ParseRules | None:
    """The container's JSON parsing rules, or None when lines are sent as text."""
    if values["parse"] != "json":
        return None
    return ParseRules(values["parse-message-keys"], values["parse-level-keys"],
                      values["parse-time-keys"], values["parse-max-bytes"])


class ParsedLine:
    """A line that was a JSON object: what the sinks send instead of its text. ``line`` keeps
    the bytes as written (Loki and syslog send them)."""

    __slots__ = ("fields", "level", "line", "message", "source", "taken", "time", "time_nano")
    partial = False

    def __init__(self, entry: Line, fields: dict[str, Any], taken: dict[str, Any],
                 rules: ParseRules) -> None:
        self.source = entry.source
        self.time_nano = entry.time_nano
        self.line = entry.line
        self.fields = fields  # the rest of the object
        self.taken = taken  # the message, level and time, under the keys the line used
        self.message = _text(_first(taken, rules.message_keys))  # None: no message key
        self.level = _text(_first(taken, rules.level_keys))
        self.time = _first(taken, rules.time_keys)  # as the line wrote it; None: none

    def whole(self) -> dict[str, Any]:
        """The object as the line had it (OTLP's body)."""
        return {**self.taken, **self.fields}

    def text(self) -> str:
        """The record's ``message``: the object's message, or the whole line."""
        if self.message is not None:
            return self.message
        return self.line.decode("utf-8", "replace")

    def extras(self) -> dict[str, Any]:
        """What the JSON record has besides its message: ``log.level``, ``log.time``,
        ``json``."""
        out: dict[str, Any] = {}
        if self.level is not None or self.time is not None:
            out["log"] = {k: v for k, v in (("level", self.level), ("time", self.time))
                          if v is not None}
        out["json"] = self.fields
        return out

    def json_tail(self) -> bytes:
        """The record's message and extras as JSON members: ``"<message>","log":..,"json":..``
        (what follows ``"message":``)."""
        # orjson refused lone surrogates when it parsed the line: everything here encodes.
        return orjson.dumps(self.text()) + b"," + orjson.dumps(self.extras())[1:-1]


@dataclass(slots=True)
class ParseStats:
    parsed: int = 0
    not_object: int = 0  # not JSON, or JSON but not an object
    too_large: int = 0
    too_deep: int = 0


def _depth(value: Any) -> int:
    """How deep objects and arrays go in a parsed value (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in v if isinstance(c, (dict, list)))
    return deepest


def _take(obj: dict[str, Any], rules: ParseRules) -> dict[str, Any]:
    """The object's message, level and time (the first key of each list it has), taken out."""
    taken = {}
    for keys in (rules.message_keys, rules.level_keys, rules.time_keys):
        for k in keys:
            if k in obj:
                taken[k] = obj.pop(k)
                break
    return taken


def _first(taken: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((taken[k] for k in keys if k in taken), None)


class JsonParser:
    def __init__(self, rules: ParseRules, stats: ParseStats | None = None) -> None:
        self.rules = rules
        self.stats = ParseStats() if stats is None else stats

    def parse(self, lines: Iterable[Line]) -> Sequence[Line | ParsedLine]:
        out: list[Line | ParsedLine] = []
        rules, stats, loads = self.rules, self.stats, orjson.loads
        for line in lines:
            text = line.line
            if not text.startswith(b"{") and not text.lstrip().startswith(b"{"):
                stats.not_object += 1
                out.append(line)
                continue
            if len(text) > rules.max_bytes:
                stats.too_large += 1
                out.append(line)
                continue
            try:
                obj = loads(text)
            except orjson.JSONDecodeError:
                stats.not_object += 1
                out.append(line)
                continue
            if not isinstance(obj, dict):
                stats.not_object += 1
                out.append(line)
                continue
            if sum(map(text.count, (b"{", b"["))) > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
                stats.too_deep += 1
                out.append(line)
                continue
            stats.parsed += 1
            out.append(ParsedLine(line, obj, _take(obj, rules), rules))
        return out


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def any_parsed(lines: Sequence[Any]) -> bool:
    """Whether a batch holds parsed lines (sinks then take their per-line path)."""
    return any(type(x) is ParsedLine for x in lines)


# A level's name (lower case) as a syslog severity (RFC 5424) and an OpenTelemetry
# SeverityNumber (the data model's mapping of common names).
_SEVERITIES = {
    "trace": (7, 1), "debug": (7, 5), "info": (6, 9), "information": (6, 9), "notice": (5, 10),
    "warn": (4, 13), "warning": (4, 13), "err": (3, 17), "error": (3, 17),
    "crit": (2, 18), "critical": (2, 18), "alert": (1, 19), "fatal": (2, 21),
    "emerg": (0, 21), "emergency": (0, 21), "panic": (0, 21),
}


def syslog_severity(level: str | None) -> int | None:
    """The syslog severity of a level's name (None: not a name it knows)."""
    found = _SEVERITIES.get(level.lower()) if level else None
    return found[0] if found else None


def otel_severity(level: str | None) -> int:
    """The OpenTelemetry SeverityNumber of a level's name (0, unspecified: not one it knows)."""
    found = _SEVERITIES.get(level.lower()) if level else None
    return found[1] if found else 0
