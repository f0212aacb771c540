"""The OTLP sink's options and settings: the endpoint (a base URL, as
``OTEL_EXPORTER_OTLP_ENDPOINT``), the request headers from pylog's environment (never from
log-opts, which ``docker inspect`` shows), the TLS context."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from ..errors import OptionError

LOGS_PATH = "/v1/logs"
ENV_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
ENV_LOGS_HEADERS = "OTEL_EXPORTER_OTLP_LOGS_HEADERS"  # per signal: wins over the general one
PROTOCOLS = ("http/protobuf", "http/json")
COMPRESSIONS = ("gzip", "none")
RETRYABLE = frozenset({429, 502, 503, 504})  # the OTLP/HTTP spec's; any other error is final


def parse_endpoint(name: str, value: str) -> str:
    """``http(s)://host[:port][/base]``; the logs URL is the base with ``/v1/logs`` appended."""
    if "@" in value:
        # Never echo the value: it probably holds a password.
        raise OptionError(f"invalid value for log opt {name!r}: credentials must not be part of "
                          f"the URL (a log-opt is visible to anyone who can run docker "
                          f"inspect); set {ENV_LOGS_HEADERS} or {ENV_HEADERS} for pylog instead")
    u = urlsplit(value.strip())
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected "
                          f"http(s)://host[:port][/path], the collector's base URL (pylog "
                          f"appends {LOGS_PATH})")
    try:
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: bad port") from None
    return f"{u.scheme}://{u.netloc}{u.path.rstrip('/')}"


def logs_url(endpoint: str) -> str:
    return endpoint + LOGS_PATH


def parse_headers(text: str, source: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` with percent-encoded values (the OTel SDKs' format).
    OptionError naming ``source`` (the variable), never showing a value."""
    out: dict[str, str] = {}
    for i, item in enumerate(text.split(",")):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = unquote(key).strip()
        if not sep or not key or any(c in key for c in " \t\r\n:"):
            raise OptionError(f"{source} is malformed at item {i + 1}: expected key=value pairs "
                              f"separated by commas")
        value = unquote(value).strip()
        if any(c in value for c in "\r\n\0"):
            raise OptionError(f"{source}: the value of header {key!r} holds a line break")
        out[key.lower()] = value
    return out


def env_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The request headers pylog's environment sets for OTLP logs exports."""
    env = os.environ if env is None else env
    headers = parse_headers(env.get(ENV_HEADERS, ""), ENV_HEADERS)
    headers.update(parse_headers(env.get(ENV_LOGS_HEADERS, ""), ENV_LOGS_HEADERS))
    return headers
