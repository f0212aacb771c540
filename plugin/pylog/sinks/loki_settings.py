"""The Loki sink's options, under the names of Loki's own Docker driver where the concept is the
same (``loki-url``, ``loki-tenant-id``, ``loki-batch-size``, ``loki-timeout``,
``loki-external-labels``, ``loki-tls-*``, ``loki-min-backoff``, ``loki-max-backoff``), and its
credentials, which come from pylog's environment, never from a log-opt."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..errors import OptionError
from ..tag import parse_tag_template

ENV_USERNAME = "LOKI_USERNAME"
ENV_PASSWORD = "LOKI_PASSWORD"  # basic auth, with LOKI_USERNAME
ENV_BEARER_TOKEN = "LOKI_BEARER_TOKEN"
FORMATS = ("protobuf", "json")
DEFAULT_EXTERNAL_LABELS = "container_name={{.Name}}"  # as Loki's Docker driver
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED = ("host", "source")  # pylog sets these itself


def parse_loki_url(name: str, value: str) -> str:
    """The push URL, whole (``http(s)://host:3100/loki/api/v1/push``), as the Loki driver."""
    if "@" in value:
        raise OptionError(f"invalid value for log opt {name!r}: credentials must not be part of "
                          f"the URL (a log-opt is visible to anyone who can run docker "
                          f"inspect); set {ENV_USERNAME} and {ENV_PASSWORD}, or "
                          f"{ENV_BEARER_TOKEN}, for pylog instead")
    u = urlsplit(value.strip())
    if u.scheme not in ("http", "https") or not u.hostname or u.fragment:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected "
                          f"http(s)://host:3100/loki/api/v1/push")
    try:
        u.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: bad port") from None
    return value.strip()


def parse_external_labels(name: str, value: str) -> tuple[tuple[str, str], ...]:
    """``name=value,...``, each value a tag template (``{{.Name}}``, ``{{.ID}}``...)."""
    out = []
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, template = item.partition("=")
        key = key.strip()
        if not sep or not LABEL_NAME.match(key):
            raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected "
                              f"name=value pairs separated by commas, each name a Loki label "
                              f"name ([a-zA-Z_][a-zA-Z0-9_]*)")
        if key in RESERVED:
            raise OptionError(f"invalid value {value!r} for log opt {name!r}: {key!r} is set "
                              f"by pylog itself (the host's name, the stream)")
        parse_tag_template(template)  # OptionError naming the bad field
        out.append((key, template))
    return tuple(out)


def parse_file(name: str, value: str) -> str:
    if not os.path.isabs(value) or not os.path.isfile(value):
        raise OptionError(f"invalid value {value!r} for log opt {name!r}: expected an absolute "
                          f"path to a readable PEM file")
    return value


def credentials(env: Mapping[str, str] | None = None) -> str | None:
    """The Authorization header pylog's environment sets, or None. OptionError naming the
    variable when only half of a pair is set."""
    env = os.environ if env is None else env
    token = env.get(ENV_BEARER_TOKEN)
    user, password = env.get(ENV_USERNAME), env.get(ENV_PASSWORD)
    if token and (user or password):
        raise OptionError(f"set either {ENV_BEARER_TOKEN} or {ENV_USERNAME}/{ENV_PASSWORD} "
                          f"for the Loki sink, not both")
    if token:
        return f"Bearer {token}"
    if bool(user) != bool(password):
        raise OptionError(f"{ENV_USERNAME} and {ENV_PASSWORD} go together: one is not set")
    if user and password:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return None
