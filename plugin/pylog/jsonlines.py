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

import gc
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

import orjson

from .frames import Columns, columns_of
from .jsonshapes import Shapes, said_as_text
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


@dataclass(slots=True)
class Parsed(Columns):
    """A batch after ``parse=json``: its lines as :class:`Columns` (as written: Loki and
    syslog send them), and for each line its object (the fields left once message, level and
    time are taken out: a dict, or a learned shape's struct, :mod:`pylog.jsonshapes`) or None
    where the line is sent as text, its message, level and own time (None: none)."""

    objects: list[Any] = field(default_factory=list)
    messages: list[str | None] = field(default_factory=list)
    levels: list[str | None] = field(default_factory=list)
    stamps: list[str | None] = field(default_factory=list)  # the lines' own times, as text
    rules: ParseRules = ParseRules()
    shaped: bool = False  # the objects are structs
    complete: bool = False  # every line an object with a message, level and time, all text
    _dicts: list[dict[str, Any] | None] | None = None

    @property
    def fields(self) -> list[dict[str, Any] | None]:
        """Each line's fields as a dict (None: sent as text). Structs' lines are parsed again
        the general way, once: what orjson makes of them, as the general path would have."""
        if not self.shaped:
            return self.objects
        if self._dicts is None:
            self._dicts = [None if o is None else _fields_of(t, self.rules)
                           for t, o in zip(self.lines, self.objects)]
        return self._dicts

    def plain(self) -> Columns:
        return Columns(self.sources, self.times, self.lines, self.sizes)

    def sliced(self, start: int, stop: int) -> Parsed:
        return Parsed(self.sources[start:stop], self.times[start:stop], self.lines[start:stop],
                      self.sizes[start:stop], self.objects[start:stop],
                      self.messages[start:stop], self.levels[start:stop],
                      self.stamps[start:stop], self.rules, self.shaped, self.complete,
                      None if self._dicts is None else self._dicts[start:stop])

    def whole(self, i: int) -> dict[str, Any] | None:
        """Line i's object as the line had it (OTLP's body); None: sent as text."""
        return orjson.loads(self.lines[i]) if self.objects[i] is not None else None

    def json_members(self) -> list[bytes]:
        """Each record's message, as JSON, and for a parsed line ``,"log":{...},"json":{...}``
        after it: what follows ``"message":`` in the JSON record (docs/json-logs.md)."""
        dumps = orjson.dumps
        if all(f is not None for f in self.fields) and all(
                v is not None for v in chain(self.messages, self.levels, self.stamps)):
            return list(map(b"".join, zip(  # every line an object with all three: C calls
                map(dumps, self.messages), repeat(b',"log":{"level":'),
                map(dumps, self.levels), repeat(b',"time":'), map(dumps, self.stamps),
                repeat(b'},"json":'), map(dumps, self.fields))))
        out = []
        for text, fields, msg, level, when in zip(self.lines, self.fields, self.messages,
                                                  self.levels, self.stamps):
            if fields is None:
                out.append(dumps(text.decode("utf-8", "replace")))
                continue
            log = {k: v for k, v in (("level", level), ("time", when)) if v is not None}
            head = dumps(msg if msg is not None else text.decode("utf-8", "replace"))
            out.append(head + (b',"log":' + dumps(log) if log else b"")
                       + b',"json":' + dumps(fields))
        return out


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


def _brackets(texts: list[bytes]) -> int:
    """A bound on the batch's deepest line: the most ``{`` in a line plus the most ``[``
    (each counted in C)."""
    return (max(map(bytes.count, texts, repeat(b"{")))
            + max(map(bytes.count, texts, repeat(b"["))))


_MISSING = object()


class JsonParser:
    """Turns batches into :class:`Parsed` ones. A batch whose every line is an object within
    the limits (a JSON logger's) is parsed and taken apart a column at a time, in C calls;
    any other line by line. With ``shapes`` (for a sink that packs structs as they are:
    fluentd), a batch of lines with known keys is decoded into structs
    (:mod:`pylog.jsonshapes`)."""

    def __init__(self, rules: ParseRules, stats: ParseStats | None = None,
                 shapes: bool = False) -> None:
        self.rules = rules
        self.stats = ParseStats() if stats is None else stats
        self.shapes = Shapes() if shapes else None

    def parse(self, lines: Sequence[Line]) -> Sequence[Line]:
        sources, times, texts = columns_of(lines)
        if not texts:
            return lines
        sizes = lines.sizes if isinstance(lines, Columns) else ()
        rules = self.rules
        shaped = self._shaped(texts)
        if shaped is not None:
            self.stats.parsed += len(texts)
            structs, messages, levels, stamps, complete = shaped
            return Parsed(sources, times, texts, sizes, structs, messages, levels, stamps, rules,
                          True, complete)
        objs = self._all_objects(texts)
        if objs is None:
            objs = list(map(self._object, texts))
        else:
            self.stats.parsed += len(objs)
        if self.shapes is not None:
            self.shapes.learn(objs, (rules.message_keys, rules.level_keys, rules.time_keys))
        if all(o is None for o in objs):
            return lines
        (msgs, m), (lvls, lv), (when, t) = (
            self._take(objs, keys) for keys in (rules.message_keys, rules.level_keys,
                                                rules.time_keys))
        return Parsed(sources, times, texts, sizes, objs, msgs, lvls, when, rules,
                      complete=m and lv and t)

    def _shaped(self, texts: list[bytes]) -> tuple[list[Any], list[str | None],
                                                   list[str | None], list[str | None],
                                                   bool] | None:
        """The batch decoded into the learned shape's structs, with message, level and time
        taken out (and whether every line had all three as text); None if it has no shape yet
        or a line does not fit it."""
        shapes, rules = self.shapes, self.rules
        if shapes is None or not shapes.ready() or max(map(len, texts)) > rules.max_bytes:
            return None
        # A bound on the deepest line: each line that decodes has a '{' of its own, so one
        # line has at most the batch's brackets less one for each other line (flat: 1).
        # A shape whose every value is plain decodes nothing deeper: no bound needed.
        if not shapes.flat:
            joined = b"".join(texts)
            if joined.count(b"{") + joined.count(b"[") - len(texts) + 1 > MAX_DEPTH \
                    and _brackets(texts) > MAX_DEPTH:  # maybe too deep: the general path tells
                return None
        objs = shapes.decode(texts)
        if objs is None:
            return None
        messages = shapes.take(objs, rules.message_keys)
        levels = None if messages is None else shapes.take(objs, rules.level_keys)
        stamps = None if levels is None else shapes.take(objs, rules.time_keys)
        if messages is None or levels is None or stamps is None:
            return None
        return objs, messages[0], levels[0], stamps[0], messages[1] and levels[1] and stamps[1]

    def _all_objects(self, texts: list[bytes]) -> list[dict[str, Any] | None] | None:
        """Every line's object, if every line is one within the limits; else None."""
        if max(map(len, texts)) > self.rules.max_bytes:
            return None
        try:
            objs = list(map(orjson.loads, texts))
        except orjson.JSONDecodeError:
            return None
        if not all(map(isinstance, objs, repeat(dict))):
            return None
        # CPython leaves a dict of plain values (str, number, bool, None) untracked by the
        # cycle collector: such an object is one deep. Only the others' brackets are counted.
        if any(map(gc.is_tracked, objs)) and _brackets(
                [t for t, o in zip(texts, objs) if gc.is_tracked(o)]) > MAX_DEPTH:
            return None
        return objs

    def _object(self, text: bytes) -> dict[str, Any] | None:
        """One line's object, or None (counted by why)."""
        stats = self.stats
        if not text.lstrip().startswith(b"{"):
            stats.not_object += 1
            return None
        if len(text) > self.rules.max_bytes:
            stats.too_large += 1
            return None
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:  # broken, a lone surrogate, or over orjson's 1024 deep
            stats.not_object += 1
            return None
        if not isinstance(obj, dict):
            stats.not_object += 1
            return None
        if _brackets([text]) > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
            stats.too_deep += 1
            return None
        stats.parsed += 1
        return obj

    @staticmethod
    def _take(objs: list[dict[str, Any] | None], keys: tuple[str, ...],
              ) -> tuple[list[str | None], bool]:
        """Each object's value of the first of ``keys`` it has, taken out of it, as text
        (None: none, or sent as text), and whether every one is text."""
        if None not in objs:
            got = list(map(dict.pop, objs, repeat(keys[0]), repeat(_MISSING)))  # type: ignore[arg-type]
        else:
            got = [o.pop(keys[0], _MISSING) if o is not None else None for o in objs]
        if all(map(isinstance, got, repeat(str))):  # the first key everywhere, as text: done
            return got, True
        for i, v in enumerate(got):
            if v is _MISSING:
                obj = objs[i]
                assert obj is not None
                v = next((obj.pop(k) for k in keys[1:] if k in obj), None)
            got[i] = said_as_text(v)  # one type a field: 1.7e9 -> "1.7e9"
        return got, None not in got


def _fields_of(text: bytes, rules: ParseRules) -> dict[str, Any] | None:
    """A shaped line's fields as the general path has them; None where orjson refuses the
    line (an integer past a double's range, which msgspec takes): it is sent as text."""
    try:
        return _taken_out(orjson.loads(text), rules)
    except orjson.JSONDecodeError:
        return None


def _taken_out(obj: dict[str, Any], rules: ParseRules) -> dict[str, Any]:
    """``obj`` with its message, level and time taken out (the first present of each)."""
    for keys in (rules.message_keys, rules.level_keys, rules.time_keys):
        for k in keys:
            if k in obj:
                del obj[k]
                break
    return obj


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
