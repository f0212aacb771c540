"""log-opt validation (what makes ``docker run`` fail) and Docker's tag templates."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pylog.errors import OptionError
from pylog.options import allowed_options, parse_log_options, parse_size
from pylog.sinks import SINK_TYPES
from pylog.tag import parse_tag_template, render_tag

VECTORS = Path(__file__).parent / "vectors"

ALL_OPTIONS = {
    "mode", "max-buffer-size", "cache-disabled", "cache-max-size", "cache-max-file",
    "cache-compress", "tag", "labels", "labels-regex", "env", "env-regex",
    "max-size", "max-file", "compress", "namespaces", "identity",
}
# What sinks are sent: tested in test_multiline.py (two of them cannot go together).
LINE_OPTIONS = {"multiline-pattern", "multiline-datetime-format", "multiline-timeout",
                "multiline-max-lines", "multiline-max-bytes", "rate-limit", "rate-burst",
                "rate-notice-interval", "parse", "parse-message-keys", "parse-level-keys",
                "parse-time-keys", "parse-max-bytes"}
SINK_OPTIONS = {name for cls in SINK_TYPES.values() for name in cls.OPTIONS}
CORE_OPTIONS = set(ALL_OPTIONS)
ALL_OPTIONS |= SINK_OPTIONS | LINE_OPTIONS


def start_logging_infos() -> list[dict]:
    with open(VECTORS / "requests.jsonl") as f:
        calls = [json.loads(line) for line in f if line.strip()]
    return [c["body"]["Info"] for c in calls if c["path"] == "/LogDriver.StartLogging"]


@pytest.fixture
def basic_info() -> dict:
    return next(i for i in start_logging_infos() if i["ContainerName"] == "/basic")


# ------------------------------------------------------------------ defaults and accepted options


@pytest.mark.parametrize("config", [None, {}])
def test_defaults(config):
    opts = parse_log_options(config)
    assert opts["mode"] == "blocking"
    assert opts["tag"] == "{{.ID}}"
    assert opts["labels"] == () and opts["env"] == ()
    assert opts["labels-regex"] is None and opts["env-regex"] is None
    assert opts["max-buffer-size"] is None
    assert opts["cache-disabled"] is None and opts["cache-max-size"] is None
    assert opts["cache-max-file"] is None and opts["cache-compress"] is None
    # The local store has the defaults of Docker's `local` driver: 20m x 5, compressed.
    assert opts["max-size"] == 20 * 1024 * 1024
    assert opts["max-file"] == 5
    assert opts["compress"] is True
    assert opts["namespaces"] is True  # enrichment is on unless switched off
    assert opts["identity"] == "keys"  # each namespace by its key alone in a record
    assert opts.given == frozenset()
    assert set(opts.values) == ALL_OPTIONS


def test_allowed_options_are_exactly_the_documented_ones():
    assert set(allowed_options()) == ALL_OPTIONS
    assert allowed_options() == sorted(allowed_options())


@pytest.mark.parametrize("name,value,expected", [
    ("namespaces", "false", False),
    ("namespaces", "true", True),
    ("identity", "full", "full"),
    ("identity", "keys", "keys"),
    ("mode", "non-blocking", "non-blocking"),
    ("mode", "blocking", "blocking"),
    ("max-buffer-size", "4m", 4 << 20),
    ("cache-disabled", "true", True),
    ("cache-disabled", "false", False),
    ("cache-max-size", "10m", 10 << 20),
    ("cache-max-file", "3", 3),
    ("cache-compress", "false", False),
    ("tag", "{{.Name}}/{{.ID}}", "{{.Name}}/{{.ID}}"),
    ("labels", "app,team", ("app", "team")),
    ("labels", " app , ,team ", ("app", "team")),
    ("env", "MODE", ("MODE",)),
    ("env", "MODE,OTHER", ("MODE", "OTHER")),
    ("max-size", "1m", 1 << 20),
    ("max-file", "2", 2),
    ("max-file", "1", 1),
    ("compress", "false", False),
    ("compress", "true", True),
])
def test_every_accepted_option(name, value, expected):
    opts = parse_log_options({name: value})
    assert opts[name] == expected
    assert opts.given == frozenset({name})


@pytest.mark.parametrize("name", ["labels-regex", "env-regex"])
def test_regex_options_are_compiled(name):
    pattern = parse_log_options({name: "^(MODE|APP_.*)$"})[name]
    assert pattern.match("APP_X") and pattern.match("MODE")
    assert not pattern.match("SECRET")


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True), ("True", True),
    ("0", False), ("f", False), ("F", False), ("FALSE", False), ("false", False), ("False", False),
])
def test_booleans_as_go_parses_them(value, expected):
    assert parse_log_options({"compress": value})["compress"] is expected


def test_all_options_at_once():
    config = {
        "mode": "non-blocking", "max-buffer-size": "2m", "cache-disabled": "false",
        "cache-max-size": "5m", "cache-max-file": "2", "cache-compress": "true",
        "tag": "{{.ImageName}}", "labels": "a", "labels-regex": "b", "env": "C", "env-regex": "D",
        "max-size": "10k", "max-file": "3", "compress": "false", "namespaces": "false",
        "identity": "full",
    }
    assert set(config) == CORE_OPTIONS
    opts = parse_log_options(config)
    assert opts.given == frozenset(CORE_OPTIONS)
    assert opts["max-size"] == 10240 and opts["max-file"] == 3 and opts["compress"] is False
    assert opts["namespaces"] is False and opts["identity"] == "full"


def test_config_of_every_captured_start_logging_is_accepted():
    infos = start_logging_infos()
    assert len(infos) == 5
    for info in infos:
        parse_log_options(info["Config"])
    opts = parse_log_options(infos[0]["Config"])
    assert opts["env"] == ("MODE",)
    assert opts["labels"] == ("app",)
    assert opts["tag"] == "{{.Name}}/{{.ID}}"


# ------------------------------------------------------------------ rejected options


@pytest.mark.parametrize("unknown", ["max-sizee", "gelf-address", "Tag", "max_size", ""])
def test_unknown_option_names_it_and_lists_allowed_ones(unknown):
    with pytest.raises(OptionError) as exc:
        parse_log_options({"max-size": "1m", unknown: "x"})
    msg = str(exc.value)
    assert repr(unknown) in msg
    for name in ALL_OPTIONS:
        assert name in msg


@pytest.mark.parametrize("name,value", [
    ("max-size", "abc"),
    ("max-size", ""),
    ("max-size", "0"),
    ("max-size", "-1m"),
    ("max-size", "10x"),
    ("max-size", "1.2.3m"),
    ("max-buffer-size", "lots"),
    ("cache-max-size", "m"),
    ("max-file", "0"),
    ("max-file", "-1"),
    ("max-file", "1.5"),
    ("max-file", "two"),
    ("max-file", ""),
    ("cache-max-file", "0"),
    ("compress", "maybe"),
    ("compress", "yes"),
    ("compress", ""),
    ("cache-disabled", "on"),
    ("cache-compress", "2"),
    ("mode", "fast"),
    ("mode", "Blocking"),
    ("identity", "compact"),
    ("labels-regex", "("),
    ("env-regex", "[a-"),
    ("tag", "{{json .}}"),
    ("tag", "{{.Nope}}"),
    ("tag", "{{.Name | printf \"%s\"}}"),
    ("tag", "{{.Name"),
    ("tag", "{{.ID}}}}x{{"),
    ("tag", "{{}}"),
])
def test_malformed_value_names_the_option(name, value):
    with pytest.raises(OptionError) as exc:
        parse_log_options({name: value})
    msg = str(exc.value)
    assert repr(name) in msg
    assert repr(value) in msg


@pytest.mark.parametrize("name", ["max-file", "cache-max-file"])
@pytest.mark.parametrize("value", ["1_0", " 5", "5 ", "5\n", "0x5", "٣"])
def test_counts_reject_what_go_atoi_rejects(name, value):
    """Python's int() also takes these; Docker (strconv.Atoi) does not."""
    with pytest.raises(OptionError, match=repr(name)):
        parse_log_options({name: value})


@pytest.mark.parametrize("value,expected", [("+3", 3), ("007", 7), ("12", 12)])
def test_counts_accept_what_go_atoi_accepts(value, expected):
    assert parse_log_options({"max-file": value})["max-file"] == expected


@pytest.mark.parametrize("value", [5, True, ["1m"], {"a": "b"}])
def test_non_string_value_is_rejected(value):
    with pytest.raises(OptionError) as exc:
        parse_log_options({"max-size": value})
    assert "'max-size'" in str(exc.value)


def test_bad_option_fails_even_next_to_good_ones():
    with pytest.raises(OptionError, match="'max-file'"):
        parse_log_options({"max-size": "1m", "max-file": "0", "compress": "true"})


# ------------------------------------------------------------------ sizes (go-units RAMInBytes)


@pytest.mark.parametrize("value,expected", [
    ("20m", 20 * 1024 * 1024),
    ("20M", 20 * 1024 * 1024),
    ("1.5k", 1536),
    ("100", 100),
    ("1g", 1 << 30),
    ("1G", 1 << 30),
    ("512k", 512 * 1024),
    ("20mb", 20 << 20),
    ("20MB", 20 << 20),
    ("20MiB", 20 << 20),
    ("20m", 20 << 20),
    ("20 m", 20 << 20),
    ("100b", 100),
    ("1t", 1 << 40),
    ("0.5m", 512 * 1024),
    ("1.1k", 1126),  # truncated like Go's int64(float)
])
def test_sizes_parse_as_docker_does(value, expected):
    assert parse_size("max-size", value) == expected
    assert parse_log_options({"max-size": value})["max-size"] == expected


# ------------------------------------------------------------------ tag templates


def test_tag_of_the_basic_vector(basic_info):
    assert render_tag(basic_info["Config"]["tag"], basic_info) == "basic/cea5473d46e8"


def test_default_tag_is_the_short_container_id(basic_info):
    assert render_tag(parse_log_options({})["tag"], basic_info) == "cea5473d46e8"


@pytest.mark.parametrize("template,expected", [
    ("{{.ID}}", "cea5473d46e8"),
    ("{{.FullID}}", "cea5473d46e89ae41d5b1672731285f919468b5b251442d7092dd21e35e109d1"),
    ("{{.Name}}", "basic"),
    ("{{.ImageID}}", "f101e7a8f2db"),
    ("{{.ImageFullID}}",
     "sha256:f101e7a8f2dbefc037b0ae0285a580cf3b70a559b9b649b113b4cf229533dfd9"),
    ("{{.ImageName}}", "busybox:local"),
    ("{{.DaemonName}}", "docker"),
    ("{{.Command}}",
     'sh -c echo hello stdout; echo hello stderr >&2; printf "no newline at end"'),
    ("{{ .Name }}", "basic"),
    ("app-{{.Name}}.log", "app-basic.log"),
    ("{{.Name}}{{.Name}}", "basicbasic"),
    ("x {{- .Name -}} y", "xbasicy"),
    ("plain text", "plain text"),
    ("", ""),
])
def test_tag_fields(basic_info, template, expected):
    assert render_tag(template, basic_info) == expected


def test_tag_hostname(basic_info):
    assert render_tag("{{.Hostname}}", basic_info) == os.uname().nodename


@pytest.mark.parametrize("image_id,expected", [
    ("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "0123456789ab"),
    ("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "0123456789ab"),
])
def test_image_id_is_truncated_to_12_chars_without_its_algorithm(image_id, expected):
    assert render_tag("{{.ImageID}}", {"ContainerImageID": image_id}) == expected


def test_tags_of_every_captured_container():
    names = [render_tag("{{.Name}}/{{.ID}}", i) for i in start_logging_infos()]
    assert all(re.fullmatch(r"[a-z]+/[0-9a-f]{12}", n) for n in names), names
    assert [n.split("/")[0] for n in names] == ["basic", "longline", "binary", "tty", "hostns"]


def test_command_with_null_args():
    info = next(i for i in start_logging_infos() if i["ContainerName"] == "/longline")
    info = dict(info, ContainerArgs=None)
    assert render_tag("{{.Command}}", info) == "sh"


@pytest.mark.parametrize("template", ["{{json .}}", "{{.Nope}}", "{{.Name", "{{ printf \"x\" }}"])
def test_unsupported_template_is_rejected_at_parse_time(template):
    with pytest.raises(OptionError, match="'tag'"):
        parse_tag_template(template)
