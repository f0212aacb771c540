"""Docker's log tag templates (``--log-opt tag=...``), the ``{{.Field}}`` subset users write.

Docker evaluates a Go text/template against ``logger.Info``; pylog supports plain text plus
``{{.Field}}`` actions for every field and method Docker documents. Anything else (pipelines,
functions) is rejected at ``docker run`` instead of being silently mis-rendered.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import OptionError

_ACTION_RE = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_FIELD_RE = re.compile(r"^\.([A-Za-z][A-Za-z0-9]*)$")


def _truncate_id(image_or_container_id: str) -> str:
    return image_or_container_id.split(":", 1)[-1][:12]


def _command(info: Mapping[str, Any]) -> str:
    parts = [info.get("ContainerEntrypoint") or ""] + list(info.get("ContainerArgs") or [])
    return " ".join(p for p in parts if p)


FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ID": lambda i: (i.get("ContainerID") or "")[:12],
    "FullID": lambda i: i.get("ContainerID") or "",
    "Name": lambda i: (i.get("ContainerName") or "").lstrip("/"),
    "ImageID": lambda i: _truncate_id(i.get("ContainerImageID") or ""),
    "ImageFullID": lambda i: i.get("ContainerImageID") or "",
    "ImageName": lambda i: i.get("ContainerImageName") or "",
    "Command": _command,
    "DaemonName": lambda i: i.get("DaemonName") or "",
    "Hostname": lambda i: os.uname().nodename,
}
def _raw_field(key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda info: str(info.get(key) or "")


for _raw in ("ContainerID", "ContainerName", "ContainerEntrypoint", "ContainerImageID",
             "ContainerImageName", "ContainerCreated", "LogPath"):
    FIELDS[_raw] = _raw_field(_raw)

Template = list[str | Callable[[Mapping[str, Any]], str]]


def parse_tag_template(text: str) -> Template:
    """Split a tag template into literal strings and field getters; OptionError if unsupported."""
    parts: Template = []
    pos = 0
    for m in _ACTION_RE.finditer(text):
        literal = text[pos:m.start()]
        if m.group(1):
            literal = literal.rstrip()
        if literal:
            parts.append(literal)
        field = _FIELD_RE.match(m.group(2))
        if not field or field.group(1) not in FIELDS:
            raise OptionError(
                f"invalid value {text!r} for log opt 'tag': unsupported template action "
                f"{{{{{m.group(2)}}}}}; use {{{{.Field}}}} with one of: {', '.join(sorted(FIELDS))}"
            )
        parts.append(FIELDS[field.group(1)])
        pos = m.end()
        if m.group(3):
            while pos < len(text) and text[pos].isspace():
                pos += 1
    if "{{" in text[pos:] or "}}" in text[pos:]:
        raise OptionError(f"invalid value {text!r} for log opt 'tag': unbalanced {{{{ }}}}")
    if text[pos:]:
        parts.append(text[pos:])
    return parts


def render_tag(template: str, info: Mapping[str, Any]) -> str:
    return "".join(p if isinstance(p, str) else p(info) for p in parse_tag_template(template))
