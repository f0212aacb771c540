"""The Elasticsearch sink's settings: pylog's credential settings (never log-opts), the
log-opts' parsers, and the index template the index or data stream gets on first use."""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import OptionError

# the sink's logger, as before the split: pylog's log names the logger of each message
log = logging.getLogger("pylog.sinks.elasticsearch")

DEFAULT_INDEX = "logs-pylog-default"
DEFAULT_PORT = 9200
TEMPLATE_PRIORITY = 200  # above the built-in logs-*-* template (100)

ENV_USERNAME = "ELASTICSEARCH_USERNAME"
ENV_PASSWORD = "ELASTICSEARCH_PASSWORD"
ENV_API_KEY = "ELASTICSEARCH_API_KEY"
ENV_CREDENTIALS_FILE = "ELASTICSEARCH_CREDENTIALS_FILE"


# ----------------------------------------------------------------------------- credentials


class CredentialsError(ValueError):
    """pylog's Elasticsearch credential settings are unusable (the message never has a secret)."""


@dataclass(frozen=True)
class Credentials:
    """Basic auth or an API key, with where they came from. ``repr`` shows no secret."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    source: str = "none"

    @property
    def kind(self) -> str:
        return "api key" if self.api_key else "basic" if self.username else "none"

    def header(self) -> str | None:
        """The Authorization header's value, or None."""
        if self.api_key:
            key = self.api_key
            if ":" in key:  # "id:api_key", as the create-API-key answer lists them
                key = base64.b64encode(key.encode()).decode()
            return f"ApiKey {key}"
        if self.username is not None and self.password is not None:
            pair = f"{self.username}:{self.password}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None


_FILE_KEYS = {"username": "username", "password": "password", "api_key": "api_key",
              "apikey": "api_key", ENV_USERNAME.lower(): "username",
              ENV_PASSWORD.lower(): "password", ENV_API_KEY.lower(): "api_key"}


def _read_credentials_file(path_text: str) -> dict[str, str]:
    """``key=value`` lines (``username``, ``password``, ``api_key``); ``#`` comments."""
    path = Path(path_text)
    if not path.is_absolute():
        raise CredentialsError(f"{ENV_CREDENTIALS_FILE} must be an absolute path")
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise CredentialsError(f"cannot read {ENV_CREDENTIALS_FILE} {path}: {reason}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the Elasticsearch credentials file %s can be read by other users "
                    "(mode %o); chmod 600 it", path, stat.S_IMODE(st.st_mode))
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        name = _FILE_KEYS.get(key.strip().lower())
        if not sep:
            # The line may be a bare secret: say where, never what.
            raise CredentialsError(f"{path} line {number}: expected key=value "
                                   f"(username, password or api_key)")
        if name is None:
            raise CredentialsError(f"{path} line {number}: unknown key {key.strip()[:40]!r} "
                                   f"(expected username, password or api_key)")
        values[name] = value.strip()
    return values


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials pylog's settings give, checked; raises CredentialsError."""
    env = os.environ if environ is None else environ
    file_name = env.get(ENV_CREDENTIALS_FILE, "")
    direct = [n for n in (ENV_USERNAME, ENV_PASSWORD, ENV_API_KEY) if env.get(n)]
    if file_name:
        if direct:
            raise CredentialsError(f"both {ENV_CREDENTIALS_FILE} and {', '.join(direct)} are "
                                   f"set; use one or the other")
        values = _read_credentials_file(file_name)
        source = f"file {file_name}"
    else:
        values = {"username": env.get(ENV_USERNAME, ""), "password": env.get(ENV_PASSWORD, ""),
                  "api_key": env.get(ENV_API_KEY, "")}
        source = "environment"
    username = values.get("username") or None
    password = values.get("password") or None
    api_key = values.get("api_key") or None
    where = f"in {source}"
    if api_key and (username or password):
        raise CredentialsError(f"an API key and a username/password are both set {where}; "
                               f"use one or the other")
    if username and not password:
        raise CredentialsError(f"a username but no password is set {where}")
    if password and not username:
        raise CredentialsError(f"a password but no username is set {where}")
    if username and ":" in username:
        raise CredentialsError(f"the username set {where} contains ':', which basic auth "
                               f"cannot carry")
    if not (api_key or username):
        return Credentials(source="none")
    return Credentials(username=username, password=password, api_key=api_key, source=source)


# ----------------------------------------------------------------------------- options


def _url_error(name: str, value: str, why: str) -> OptionError:
    return OptionError(f"invalid value {value!r} for log opt {name!r}: {why}")


def parse_urls(name: str, value: str) -> tuple[str, ...]:
    """One or more comma-separated ``http(s)://host[:port][/path]`` nodes of one cluster,
    normalised (port 9200 when none). Also checks pylog's credential settings, so that a
    broken setting fails ``docker run`` rather than every delivery."""
    if "@" in value:
        # Never echo the value: it probably holds a password.
        raise OptionError(
            f"invalid value for log opt {name!r}: credentials must not be part of the URL (a "
            f"log-opt is visible to anyone who can run docker inspect); set {ENV_USERNAME} and "
            f"{ENV_PASSWORD}, {ENV_API_KEY} or {ENV_CREDENTIALS_FILE} for pylog instead")
    urls = []
    for part in value.split(","):
        text = part.strip()
        if not text:
            raise _url_error(name, value, "an empty URL in the list")
        try:
            u = urlsplit(text)
            port = u.port
        except ValueError as e:
            raise _url_error(name, value, f"{text!r}: bad port or host ({e})") from None
        if port == 0:
            raise _url_error(name, value, f"{text!r}: bad port 0")
        if u.scheme not in ("http", "https"):
            raise _url_error(name, value, f"{text!r}: the scheme must be http:// or https://")
        if not u.hostname:
            raise _url_error(name, value, f"{text!r}: no host")
        if u.query or u.fragment:
            raise _url_error(name, value, f"{text!r}: a query or fragment is not allowed")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        path = u.path.rstrip("/")
        urls.append(f"{u.scheme}://{host}:{port or DEFAULT_PORT}{path}")
    try:
        load_credentials()
    except CredentialsError as e:
        raise OptionError(f"log opt {name!r}: pylog's Elasticsearch credential settings are "
                          f"unusable: {e}") from None
    return tuple(urls)


_DS_PART = re.compile(r"[a-z0-9_.]+")  # no '-' inside the parts (the naming scheme)
_PLAIN_INDEX = re.compile(r"[a-z0-9][a-z0-9._-]*")


def is_data_stream(index: str) -> bool:
    return index.startswith("logs-")


def parse_index(name: str, value: str) -> str:
    """``logs-<dataset>-<namespace>`` (a data stream) or a plain index name."""
    if value.startswith("logs-"):
        parts = value.split("-")
        if len(parts) != 3 or not all(_DS_PART.fullmatch(p) for p in parts[1:]) or \
                len(parts[1]) > 100 or len(parts[2]) > 100:
            raise OptionError(
                f"invalid value {value!r} for log opt {name!r}: a name starting with logs- is a "
                f"data stream and must be logs-<dataset>-<namespace>, each part lowercase "
                f"letters, digits, '_' or '.' without '-' (e.g. logs-pylog-default)")
        return value
    if not _PLAIN_INDEX.fullmatch(value) or len(value.encode()) > 255 or value in (".", ".."):
        raise OptionError(
            f"invalid value {value!r} for log opt {name!r}: expected a data stream "
            f"logs-<dataset>-<namespace> or an index name of lowercase letters, digits, '.', "
            f"'_' and '-' that starts with a letter or digit")
    return value


def parse_ca_cert(name: str, value: str) -> str:
    """A PEM file of CA certificates, by absolute path (loaded now to check it)."""
    if not os.path.isabs(value):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected an absolute "
                          f"path to a PEM file of CA certificates")
    try:
        ssl.create_default_context(cafile=value)
    except FileNotFoundError:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: no such file") from None
    except (OSError, ssl.SSLError) as e:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: cannot load it as PEM "
                          f"CA certificates: {e}") from None
    return value


# ----------------------------------------------------------------------------- index template


def index_template(index: str, data_stream: bool) -> dict[str, Any]:
    """The composable index template installed for the index (or data stream)."""
    body: dict[str, Any] = {
        "index_patterns": [index],
        "priority": TEMPLATE_PRIORITY,
        "template": {"mappings": template_mappings()},
        "_meta": {"managed_by": "pylog", "description": "pylog log records"},
    }
    if data_stream:
        body["data_stream"] = {}
    return body


def template_mappings() -> dict[str, Any]:
    keyword = {"type": "keyword", "ignore_above": 1024}
    return {
        "dynamic_templates": [
            {"pylog_ns_key": {"path_match": "pylog.ns_key.*", "mapping": keyword}},
            {"pylog_ns_shared": {"path_match": "pylog.ns_shared.*", "mapping": keyword}},
            {"pylog_ns_inode": {"path_match": "pylog.ns_inode.*", "mapping": {"type": "long"}}},
            {"pylog_ns_id": {"path_match": "pylog.ns_id.*", "mapping": {"type": "long"}}},
            {"container_labels": {"path_match": "container.labels.*",
                                  "match_mapping_type": "string", "mapping": keyword}},
            {"pylog_env": {"path_match": "pylog.env.*", "match_mapping_type": "string",
                           "mapping": keyword}},
        ],
        "properties": {
            "@timestamp": {"type": "date_nanos"},
            "message": {"type": "text"},
            "stream": keyword,
            "tag": keyword,
            "container": {"properties": {
                "id": keyword, "name": keyword,
                "image": {"properties": {"name": keyword, "id": keyword}},
                "labels": {"type": "object"},
            }},
            "host": {"properties": {"name": keyword, "id": keyword,
                                    "boot": {"properties": {"id": keyword}},
                                    "pid_ns_ino": {"type": "long"}}},
            "process": {"properties": {"pid": {"type": "long"}}},
            "pylog": {"properties": {"env": {"type": "object"}, "ns_key": {"type": "object"},
                                     "host_ns": keyword}},
        },
    }
