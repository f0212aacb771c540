"""Every log-opt pylog accepts, parsed and validated in one place (at StartLogging).

dockerd itself validates only ``mode``, ``max-buffer-size`` and ``cache-*`` for plugins; the rest
is ours. An unknown or malformed option must fail ``docker run`` with a message that names the
option and what is allowed, so every parser here raises :class:`OptionError` with such a message.
Sinks add their options to :data:`OPTION_GROUPS` (one registry line each).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError
from .multiline import datetime_regex, multiline_rules
from .ratelimit import rate_rules
from .tag import parse_tag_template

DRIVER_NAME = "pylog"

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_size(name: str, value: str) -> int:
    """A byte count the way Docker writes one (``20m``, ``1.5g``, ``512k``, ``100``; powers of 1024)."""
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise OptionError(
            f"invalid value {value!r} for log opt {name!r}: expected a size such as 100k, 20m or 1g"
        )
    size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    if size <= 0:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: must be greater than 0")
    return size


def parse_bool(name: str, value: str) -> bool:
    """A boolean as Go's strconv.ParseBool reads it (what Docker's own drivers accept)."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected true or false")


_INT_RE = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts


def parse_positive_int(name: str, value: str) -> int:
    if not _INT_RE.fullmatch(value):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected a whole number")
    n = int(value)
    if n < 1:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: must be at least 1")
    return n


def parse_regex(name: str, value: str) -> re.Pattern[str]:
    try:
        return re.compile(value)
    except re.error as e:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: bad regex: {e}") from None


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(name: str, value: str) -> float:
    """A Go duration (``500ms``, ``1s``, ``1m30s``) in seconds; a bare number is seconds."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected a "
                              f"duration such as 500ms, 1s or 1m30s")
        return seconds
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected a duration "
                          f"such as 500ms, 1s or 1m30s")
    return total


def parse_choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        if value not in choices:
            raise OptionError(
                f"invalid value {value!r} for log opt {name!r}: expected one of {', '.join(choices)}"
            )
        return value

    return parse


def parse_name_list(name: str, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _parse_tag(name: str, value: str) -> str:
    parse_tag_template(value)  # raises OptionError naming the problem
    return value


# option name -> (parser, default). Defaults of None mean "not set".
Parser = Callable[[str, str], Any]
OPTION_GROUPS: dict[str, dict[str, tuple[Parser, Any]]] = {
    # Options dockerd itself understands; we accept them so users' habits carry over.
    "docker": {
        "mode": (parse_choice(("blocking", "non-blocking")), "blocking"),
        "max-buffer-size": (parse_size, None),
        "cache-disabled": (parse_bool, None),
        "cache-max-size": (parse_size, None),
        "cache-max-file": (parse_positive_int, None),
        "cache-compress": (parse_bool, None),
        "tag": (_parse_tag, "{{.ID}}"),
        "labels": (parse_name_list, ()),
        "labels-regex": (parse_regex, None),
        "env": (parse_name_list, ()),
        "env-regex": (parse_regex, None),
    },
    # Namespace enrichment.
    "enrichment": {
        "namespaces": (parse_bool, True),
        "identity": (parse_choice(("keys", "full")), "keys"),
    },
    # What sinks are sent (never the store): multi-line events joined (pylog.multiline), a rate
    # limit (pylog.ratelimit), JSON lines as fields (pylog.jsonlines).
    "lines": {
        "multiline-pattern": (parse_regex, None),
        "multiline-datetime-format": (datetime_regex, None),
        "multiline-timeout": (parse_duration, 1.0),
        "multiline-max-lines": (parse_positive_int, 1000),
        "multiline-max-bytes": (parse_size, 1 << 20),
        "rate-limit": (parse_positive_int, None),
        "rate-burst": (parse_positive_int, None),
        "rate-notice-interval": (parse_duration, 10.0),
        "parse": (parse_choice(("none", "json")), "none"),
        "parse-message-keys": (parse_name_list, ("msg", "message")),
        "parse-level-keys": (parse_name_list, ("level", "severity")),
        "parse-time-keys": (parse_name_list, ("time", "ts")),
        "parse-max-bytes": (parse_size, 64 << 10),
    },
    # The local store, with the options and defaults of Docker's `local` driver.
    "store": {
        "max-size": (parse_size, 20 * 1024 * 1024),
        "max-file": (parse_positive_int, 5),
        "compress": (parse_bool, True),
    },
}


def allowed_options() -> list[str]:
    return sorted(name for group in OPTION_GROUPS.values() for name in group)


@dataclass(frozen=True)
class LogOptions:
    """Parsed log-opts of one container: ``values`` has every known option, defaults filled in."""

    values: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def parse_log_options(config: Mapping[str, str] | None) -> LogOptions:
    """Validate the ``Info.Config`` map of StartLogging; raise OptionError on the first bad one."""
    config = config or {}
    known: dict[str, tuple[Parser, Any]] = {}
    for group in OPTION_GROUPS.values():
        known.update(group)
    unknown = sorted(k for k in config if k not in known)
    if unknown:
        raise OptionError(
            f"unknown log opt {unknown[0]!r} for {DRIVER_NAME} log driver; "
            f"allowed options: {', '.join(allowed_options())}"
        )
    values: dict[str, Any] = {}
    for name, (parser, default) in known.items():
        raw = config.get(name)
        if raw is None:
            values[name] = default
        elif not isinstance(raw, str):
            raise OptionError(f"invalid value {raw!r} for log opt {name!r}: expected a string")
        else:
            values[name] = parser(name, raw)
    multiline_rules(values)  # options that cannot go together, or need another
    rate_rules(values)
    if not all(values[k] for k in ("parse-message-keys", "parse-level-keys", "parse-time-keys")):
        raise OptionError("log opts 'parse-message-keys', 'parse-level-keys' and "
                          "'parse-time-keys' each need at least one key")
    return LogOptions(values=values, given=frozenset(config))
