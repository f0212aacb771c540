"""The demo stack in compose/ (docs/compose.md), checked offline: no image is pulled, no container
runs and nothing but 127.0.0.1 is contacted.

- ``docker-compose config`` accepts compose/docker-compose.yml, and the stack is what the docs
  say: pinned Elasticsearch and Kibana 8.x of one version, fluentd built from compose/fluentd,
  three demo containers logging through pylog with log-opts pylog itself accepts, addressed at
  the ports the stack publishes on localhost, and a one-shot Kibana setup;
- the Kibana saved objects (compose/kibana/*.ndjson) are valid NDJSON saved objects of Kibana 8.x
  whose references resolve, are what compose/kibana/generate.py writes, and name only fields
  that pylog really sends: the fields of records built with pylog's own code
  (``build_context(...)``, ``record_json``, the fluentd sink's messages and ``context_pairs``)
  for containers like the demo's, and for the compose file's own containers as it configures
  them (which must fill every panel);
- fluentd's index template maps the fields it shares with pylog's Elasticsearch sink exactly as
  pylog does, so that the one data view over both indices has no type conflicts, for records
  with ``identity=keys`` and ``identity=full`` alike; fluent.conf's filter gives records the
  ``container.id`` and ``container.name`` pylog's Elasticsearch sink writes;
- the setup script imports the files the way Kibana's import API wants (against a stand-in
  Kibana on 127.0.0.1).
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import io
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgpack
import pytest

import pylog.sinks  # noqa: F401  (registers the sinks' log-opts with the option parser)
from pylog.entry import LogEntry
from pylog.namespaces import HeldNamespaces, NamespaceIdentity
from pylog.nsregistry import NamespaceRegistry
from pylog.options import parse_log_options
from pylog.record import TimestampFormatter, build_context, record_json
from pylog.sinks import configured_sinks
from pylog.sinks.elasticsearch import ElasticsearchSink, template_mappings
from pylog.sinks.fluentd import FluentdSink
from pylog.sinks.fluentd_encode import context_pairs
from tests.helpers_records import sharing_summary
from tests.peers.fluentd_receiver import FluentdReceiver, _ext_hook

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
KIBANA_DIR = COMPOSE_DIR / "kibana"
FLUENTD_DIR = COMPOSE_DIR / "fluentd"
NDJSON_FILES = ("data-view.ndjson", "dashboard.ndjson")  # the import order of setup.sh

DEMO = ("web", "sidecar", "agent")
NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


# ============================================================================ docker-compose config

def _compose_exe() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("the docker-compose binary is not installed (Debian: apt-get install "
                    "docker-compose; scripts/setup-host.sh --for-tests installs it)")
    return exe


def _yaml_to_data(text: str, exe: str) -> Any:
    """Parse ``docker-compose config``'s YAML. pylog's venv has no YAML library; Debian's
    docker-compose 1.29 is a Python program whose interpreter has one (python3-yaml)."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    first = Path(exe).read_bytes().split(b"\n", 1)[0]
    if not (first.startswith(b"#!") and b"python" in first):
        pytest.fail(f"cannot parse the output of {exe}: no YAML library here and {exe} is not "
                    f"a Python program")
    interpreter = first[2:].decode().split()[0]
    program = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    proc = subprocess.run([interpreter, "-c", program],
                          input=text, check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def compose_config(compose_file: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The stack as docker-compose resolves it (and validates it: a failure fails the test)."""
    exe = _compose_exe()
    base = [exe, "--project-directory", str(compose_file.parent), "-f", str(compose_file)]
    # Compose v2 prints JSON when asked; v1 (Debian's 1.29) only YAML: it answers --format with
    # its usage text (and exit status 0).
    proc = subprocess.run([*base, "config", "--format", "json"], check=False, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode == 0 and proc.stdout.lstrip().startswith("{"):
        return json.loads(proc.stdout)
    proc = subprocess.run([*base, "config"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"docker-compose config refused {compose_file}:\n{proc.stderr}"
    data = _yaml_to_data(proc.stdout, exe)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


def published(service: dict[str, Any], container_port: int) -> tuple[str, int]:
    """(host address, host port) that a service's container port is published on."""
    for p in service.get("ports", []):
        if isinstance(p, dict):  # Compose v2's long form
            if int(p["target"]) == container_port:
                return p.get("host_ip") or "0.0.0.0", int(p["published"])
        else:  # v1: "127.0.0.1:9200:9200/tcp"
            parts = str(p).split("/")[0].split(":")
            if int(parts[-1]) == container_port:
                host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
                return host_ip, int(parts[-2])
    raise AssertionError(f"container port {container_port} is not published: {service}")


def _depends(service: dict[str, Any]) -> dict[str, str]:
    dep = service.get("depends_on", {})
    if isinstance(dep, list):
        return {name: "service_started" for name in dep}
    return {name: (d or {}).get("condition", "service_started") for name, d in dep.items()}


def test_docker_compose_config_accepts_the_stack(config: dict[str, Any]) -> None:
    assert set(services(config)) == {"elasticsearch", "kibana", "fluentd", "kibana-setup", *DEMO}


def test_docker_compose_config_would_refuse_a_broken_file(tmp_path: Path) -> None:
    """The check above means something: the same validator refuses a misspelt key."""
    broken = COMPOSE_FILE.read_text().replace("network_mode: host", "network_mod: host", 1)
    assert broken != COMPOSE_FILE.read_text()
    (tmp_path / "docker-compose.yml").write_text(broken)
    shutil.copytree(FLUENTD_DIR, tmp_path / "fluentd")
    shutil.copytree(KIBANA_DIR, tmp_path / "kibana")
    exe = _compose_exe()
    proc = subprocess.run([exe, "--project-directory", str(tmp_path), "-f",
                           str(tmp_path / "docker-compose.yml"), "config", "-q"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "network_mod" in proc.stderr


def _image_version(image: str, repository: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name == repository, image
    return tag


def test_elasticsearch_and_kibana_are_one_pinned_8x_version(config: dict[str, Any]) -> None:
    s = services(config)
    es = _image_version(s["elasticsearch"]["image"],
                        "docker.elastic.co/elasticsearch/elasticsearch")
    kibana = _image_version(s["kibana"]["image"], "docker.elastic.co/kibana/kibana")
    assert re.fullmatch(r"8\.\d+\.\d+", es), es
    assert kibana == es
    env = s["elasticsearch"]["environment"]
    assert env["discovery.type"] == "single-node"
    assert env["xpack.security.enabled"] == "false"  # documented in docs/compose.md
    assert s["kibana"]["environment"]["ELASTICSEARCH_HOSTS"] == "http://elasticsearch:9200"
    # security is off: nothing may be published beyond this machine
    for name, service in s.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    assert "healthcheck" in s["elasticsearch"] and "healthcheck" in s["kibana"]


def test_kibana_setup_is_a_one_shot_import_of_the_saved_objects(config: dict[str, Any]) -> None:
    setup = services(config)["kibana-setup"]
    assert setup["image"].startswith("curlimages/curl:")
    assert _depends(setup) == {"kibana": "service_healthy"}
    assert setup.get("restart", "no") == "no"
    (volume,) = setup["volumes"]
    source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else \
        volume.split(":")[:2]
    assert Path(source) == KIBANA_DIR
    script = setup["entrypoint"][-1]
    assert script.startswith(target + "/")
    script_path = KIBANA_DIR / script[len(target) + 1:]
    text = script_path.read_text()
    assert "/api/saved_objects/_import?overwrite=true" in text and "kbn-xsrf: true" in text
    assert re.search(r'FILES="data-view\.ndjson dashboard\.ndjson"', text)
    assert sorted(p.name for p in KIBANA_DIR.glob("*.ndjson")) == sorted(NDJSON_FILES)


def test_fluentd_is_built_with_the_elasticsearch_output(config: dict[str, Any]) -> None:
    fluentd = services(config)["fluentd"]
    build = fluentd["build"]
    context = Path(build["context"] if isinstance(build, dict) else build)
    assert context == FLUENTD_DIR
    dockerfile = (context / "Dockerfile").read_text()
    assert re.search(r"^FROM fluent/fluentd:v1\.\d+-debian-\d+$", dockerfile, re.MULTILINE)
    assert re.search(r"gem install .*fluent-plugin-elasticsearch", dockerfile)
    # the 9.x Ruby client breaks against Elasticsearch 8: the gem must be held at 8.x
    assert re.search(r"gem install .*elasticsearch -v '~> 8\.", dockerfile)
    copied = {Path(dst).name: src for src, dst in
              re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.MULTILINE)}
    for src in copied.values():
        assert (context / src).is_file(), src
    conf = fluent_conf()
    assert conf["source"]["@type"] == "forward" and conf["source"]["port"] == "24224"
    assert published(fluentd, 24224) == ("127.0.0.1", 24224)
    out = conf["match"]
    assert out["@type"] == "elasticsearch" and out["host"] == "elasticsearch"
    assert out["port"] == "9200" and out["include_timestamp"] == "true"
    assert out["time_precision"] == "9" and out["use_legacy_template"] == "false"
    assert Path(out["template_file"]).name in copied  # the file the image really has
    assert Path(copied["fluent.conf"]).name == "fluent.conf"


def _params(body: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for line in body.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("<") and " " in line:
            key, value = line.split(None, 1)
            params.setdefault(key, value)
    return params


def fluent_conf() -> dict[str, dict[str, str]]:
    """The top-level <source>, <filter **> and <match **> of fluent.conf, as {param: value};
    ``record`` is the filter's <record> section."""
    text = (FLUENTD_DIR / "fluent.conf").read_text()
    out: dict[str, dict[str, str]] = {}
    order = []
    for section, body in re.findall(r"^<(source|filter \*\*|match \*\*)>\n(.*?)"
                                    r"^</(?:source|filter|match)>", text,
                                    re.MULTILINE | re.DOTALL):
        kind = section.split()[0]
        order.append(kind)
        out[kind] = _params(re.sub(r"^\s*<record>\n.*?^\s*</record>\n", "", body,
                                   flags=re.MULTILINE | re.DOTALL))
        if kind == "filter":
            (record,) = re.findall(r"^\s*<record>\n(.*?)^\s*</record>", body,
                                   re.MULTILINE | re.DOTALL)
            out["record"] = _params(record)
    # the filter runs on the events before the match writes them
    assert order == ["source", "filter", "match"], order
    return out


# fluent.conf's <record>: each field, the Ruby expression that makes it from a record and what
# that expression gives (Python's reading of it: no Ruby here)
FLUENTD_RECORD = {
    "container.id": ('${record["container_id"]}', lambda r: r["container_id"]),
    "container.name": ('${record["container_name"]&.delete_prefix("/")}',
                       lambda r: r["container_name"].removeprefix("/")),
}


def fluentd_filter(record: dict[str, Any]) -> dict[str, Any]:
    """A record as fluent.conf's filter leaves it, its dotted keys expanded as Elasticsearch
    expands them."""
    out = json.loads(json.dumps(record))
    for field, (_, make) in FLUENTD_RECORD.items():
        *parents, leaf = field.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        assert leaf not in node, f"{field} is already in the record"
        node[leaf] = make(record)
    return out


def test_fluentd_filter_adds_container_id_and_name_from_dockers_keys() -> None:
    conf = fluent_conf()
    assert conf["filter"] == {"@type": "record_transformer", "enable_ruby": "true"}
    assert conf["record"] == {field: expr for field, (expr, _) in FLUENTD_RECORD.items()}
    # and they say what pylog's Elasticsearch sink says of the same container
    line = LogEntry(source="stdout", time_nano=1_795_319_769_670_262_696, line=b"x")
    for _, ctx in demo_contexts(generic_specs()):
        _, body = context_pairs(ctx)
        flat = list(msgpack.Unpacker(io.BytesIO(body), raw=False))
        pairs = dict(zip(flat[::2], flat[1::2], strict=True))
        assert "id" not in pairs["container"] and "name" not in pairs["container"]
        direct = json.loads(record_json(line, ctx, TimestampFormatter()))["container"]
        through_fluentd = fluentd_filter(pairs)["container"]
        assert through_fluentd == direct, ctx.name


# ============================================================================ the demo containers

def demo_log_opts(config: dict[str, Any], name: str) -> dict[str, str]:
    logging = services(config)[name]["logging"]
    assert logging["driver"] == "pylog"
    return {k: str(v) for k, v in logging["options"].items()}


def test_demo_services_share_and_use_the_host_namespaces(config: dict[str, Any]) -> None:
    s = services(config)
    assert s["sidecar"]["network_mode"] == "service:web"
    assert s["sidecar"]["pid"] == "service:web"
    assert s["agent"]["pid"] == "host" and s["agent"]["network_mode"] == "host"
    for name in DEMO:
        script = " ".join(s[name]["command"])
        assert "while true" in script and "sleep" in script, name  # logs until stopped


def test_demo_log_opts_are_accepted_by_pylog_and_reach_the_published_ports(
        config: dict[str, Any]) -> None:
    s = services(config)
    es_host = published(s["elasticsearch"], 9200)
    fluentd_host = published(s["fluentd"], 24224)
    kinds: dict[str, set[str]] = {}
    for name in DEMO:
        options = parse_log_options(demo_log_opts(config, name))  # as at docker run
        sinks = configured_sinks(options)
        assert sinks, f"{name} sends its records nowhere but the local store"
        kinds[name] = {sink.kind for sink in sinks}
        for sink in sinks:
            if sink.kind == FluentdSink.KIND:
                scheme, host, port = sink["fluentd-address"]
                # pylog runs in the host's network namespace: the sink is the published port
                assert (scheme, host, port) == ("tcp", "localhost", fluentd_host[1])
            elif sink.kind == ElasticsearchSink.KIND:
                assert sink["elasticsearch-url"] == (f"http://localhost:{es_host[1]}",)
                assert fnmatch.fnmatchcase(sink["elasticsearch-index"], data_view_title())
            else:
                raise AssertionError(f"{name}: unexpected sink {sink.kind}")
    # both paths into the data view are exercised
    assert set().union(*kinds.values()) == {FluentdSink.KIND, ElasticsearchSink.KIND}
    assert fnmatch.fnmatchcase(fluent_conf()["match"]["index_name"], data_view_title())


# ============================================================================ saved objects

def load_ndjson(name: str) -> list[dict[str, Any]]:
    text = (KIBANA_DIR / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and "\r" not in text
    out = []
    for number, line in enumerate(text.split("\n")[:-1], 1):
        assert line.strip(), f"{name} line {number} is empty"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"{name} line {number} is not a JSON object"
        out.append(obj)
    return out


@pytest.fixture(scope="module")
def saved_objects() -> list[dict[str, Any]]:
    return [obj for name in NDJSON_FILES for obj in load_ndjson(name)]


def data_view_title() -> str:
    (dv,) = [o for o in load_ndjson("data-view.ndjson") if o["type"] == "index-pattern"]
    return dv["attributes"]["title"]


def _parse(text: str) -> Any:
    return json.loads(text)


# What Kibana 8.x accepts in each object's attributes (from its saved-object schemas: dashboard
# and search forbid unknown keys; index-pattern attributes are strings but for allowNoIndex).
ALLOWED_ATTRIBUTES = {
    "index-pattern": {"title", "name", "timeFieldName", "fields", "fieldAttrs", "sourceFilters",
                      "fieldFormatMap", "type", "typeMeta", "allowNoIndex", "runtimeFieldMap"},
    "lens": {"title", "description", "visualizationType", "state"},
    "search": {"title", "description", "columns", "sort", "grid", "rowHeight", "rowsPerPage",
               "hideChart", "breakdownField", "kibanaSavedObjectMeta", "isTextBasedQuery",
               "usesAdHocDataView", "timeRestore", "timeRange", "refreshInterval", "viewMode",
               "hideAggregatedPreview", "hits", "version"},
    "dashboard": {"title", "description", "kibanaSavedObjectMeta", "timeRestore", "timeFrom",
                  "timeTo", "refreshInterval", "controlGroupInput", "panelsJSON", "optionsJSON",
                  "hits", "version"},
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


# The oldest Kibana the objects are made for: Lens `formBased` layers and the saved-object format
# with typeMigrationVersion (docs/compose.md says 8.9 or later 8.x).
MIN_KIBANA = "8.9.0"


def test_saved_objects_are_kibana_8_ndjson(saved_objects: list[dict[str, Any]]) -> None:
    ids = [(o["type"], o["id"]) for o in saved_objects]
    assert len(ids) == len(set(ids))
    for obj in saved_objects:
        assert {"type", "id", "attributes"} <= set(obj), obj
        assert isinstance(obj["id"], str) and obj["id"] and isinstance(obj["attributes"], dict)
        assert obj["type"] in ALLOWED_ATTRIBUTES, obj["type"]
        assert set(obj["attributes"]) <= ALLOWED_ATTRIBUTES[obj["type"]], obj["id"]
        assert obj["attributes"]["title"]
        # never newer than the oldest Kibana they are for (Kibana refuses objects newer than
        # itself and migrates older ones forward); >= 8.0.0, so that no pre-8.0 conversion runs
        assert _version("8.0.0") <= _version(obj["typeMigrationVersion"]) <= _version(
            MIN_KIBANA), obj["id"]
        assert obj["coreMigrationVersion"] == "8.8.0"
        assert "migrationVersion" not in obj  # the pre-8.8 field
    types = sorted({t for t, _ in ids})
    assert types == ["dashboard", "index-pattern", "lens", "search"]
    (dv,) = [o for o in saved_objects if o["type"] == "index-pattern"]
    assert dv["attributes"]["timeFieldName"] == "@timestamp"
    for index in ("pylog-direct", "pylog-fluentd"):  # the two indices docs/compose.md names
        assert fnmatch.fnmatchcase(index, dv["attributes"]["title"])


def test_the_stack_runs_a_kibana_the_objects_are_made_for(config: dict[str, Any]) -> None:
    kibana = _image_version(services(config)["kibana"]["image"], "docker.elastic.co/kibana/kibana")
    assert _version(MIN_KIBANA) <= _version(kibana) < _version("9.0.0")


def test_every_reference_resolves(saved_objects: list[dict[str, Any]]) -> None:
    by_key = {(o["type"], o["id"]) for o in saved_objects}
    for obj in saved_objects:
        for ref in obj.get("references", []):
            assert set(ref) == {"type", "id", "name"}, ref
            assert (ref["type"], ref["id"]) in by_key, f"{obj['id']}: dangling {ref}"
        names = [r["name"] for r in obj.get("references", [])]
        assert len(names) == len(set(names)), obj["id"]
    # the data view comes first: a file imported alone never points forward into a later file
    seen: set[tuple[str, str]] = set()
    for name in NDJSON_FILES:
        objs = load_ndjson(name)
        here = {(o["type"], o["id"]) for o in objs}
        for obj in objs:
            for ref in obj.get("references", []):
                assert (ref["type"], ref["id"]) in seen | here, (name, ref)
        seen |= here


def test_references_are_the_ones_kibana_looks_up(saved_objects: list[dict[str, Any]]) -> None:
    """Each kind of object names its references the way Kibana 8.x resolves them."""
    objs = {o["id"]: o for o in saved_objects}
    dashboards = [o for o in saved_objects if o["type"] == "dashboard"]
    assert len(dashboards) == 1
    (board,) = dashboards
    panels = _parse(board["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in board["references"]}
    assert len(panels) == len(refs) >= 4
    for panel in panels:
        pid = panel["panelIndex"]
        assert panel["gridData"]["i"] == pid
        assert 0 <= panel["gridData"]["x"] and panel["gridData"]["x"] + panel["gridData"]["w"] <= 48
        # 8.x: panelRefName "panel_<panelIndex>", reference "<panelIndex>:panel_<panelIndex>"
        assert panel["panelRefName"] == f"panel_{pid}"
        ref = refs[f"{pid}:panel_{pid}"]
        assert ref["type"] == panel["type"] == objs[ref["id"]]["type"]
        assert "id" not in panel  # by reference: the id lives in the reference only
    assert {objs[r["id"]]["type"] for r in board["references"]} == {"lens", "search"}
    for lens in (o for o in saved_objects if o["type"] == "lens"):
        layers = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        expected = {f"indexpattern-datasource-layer-{layer}" for layer in layers}
        assert {r["name"] for r in lens["references"]} == expected
        assert all(r["type"] == "index-pattern" for r in lens["references"])
    for search in (o for o in saved_objects if o["type"] == "search"):
        source = _parse(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        (ref,) = search["references"]
        assert ref["name"] == source["indexRefName"] and ref["type"] == "index-pattern"


def test_lens_states_are_consistent(saved_objects: list[dict[str, Any]]) -> None:
    for lens in (o for o in saved_objects if o["type"] == "lens"):
        attrs = lens["attributes"]
        state = attrs["state"]
        (layer_id, layer), = state["datasourceStates"]["formBased"]["layers"].items()
        columns = layer["columns"]
        assert sorted(layer["columnOrder"]) == sorted(columns)  # (object keys are unordered)
        # bucket columns first, then metrics: the order Lens builds its aggregations in
        flags = [columns[c]["isBucketed"] for c in layer["columnOrder"]]
        assert flags == sorted(flags, reverse=True), lens["id"]
        for column in columns.values():
            order = column.get("params", {}).get("orderBy", {})
            if order.get("type") == "column":
                assert order["columnId"] in columns
        vis = state["visualization"]
        if attrs["visualizationType"] == "lnsXY":
            (data_layer,) = vis["layers"]
            assert data_layer["layerId"] == layer_id
            used = [data_layer["xAccessor"], *data_layer["accessors"]]
            used += [data_layer["splitAccessor"]] if "splitAccessor" in data_layer else []
            assert sorted(used) == sorted(columns), lens["id"]
        elif attrs["visualizationType"] == "lnsDatatable":
            assert vis["layerId"] == layer_id
            assert [c["columnId"] for c in vis["columns"]] == layer["columnOrder"]
        else:
            raise AssertionError(attrs["visualizationType"])


def test_ndjson_files_are_what_generate_py_writes() -> None:
    spec = importlib.util.spec_from_file_location("pylog_compose_generate",
                                                  KIBANA_DIR / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.objects()
    assert sorted(generated) == sorted(NDJSON_FILES)
    for name, objs in generated.items():
        assert (KIBANA_DIR / name).read_text(encoding="utf-8") == module.render(objs), (
            f"{name} is stale: run python3 compose/kibana/generate.py")


# ---------------------------------------------------------------------------- fields

KQL_FIELD = re.compile(r"(?:^|[\s(])([A-Za-z@_][\w.@]*)\s*:")
FIELD_KEYS = {"sourceField", "fieldName", "sortField", "timeFieldName", "field"}


def _kql_fields(query: str) -> set[str]:
    return set(KQL_FIELD.findall(query))


def _walk(value: Any, found: set[str]) -> None:
    """Field names anywhere in a saved object, through JSON-in-JSON strings."""
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                _walk(json.loads(value), found)
            except ValueError:
                pass
        return
    if isinstance(value, list):
        for v in value:
            _walk(v, found)
        return
    if not isinstance(value, dict):
        return
    if isinstance(value.get("query"), str) and value.get("language") in ("kuery", "lucene"):
        found |= _kql_fields(value["query"])
    meta = value.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("key"), str):  # a filter pill
        found.add(meta["key"])
    for key, v in value.items():
        if key in FIELD_KEYS and isinstance(v, str):
            found.add(v)
        else:
            _walk(v, found)


def referenced_fields(obj: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    _walk(obj["attributes"], found)
    attrs = obj["attributes"]
    if obj["type"] == "index-pattern":
        for key in ("fieldFormatMap", "fieldAttrs", "runtimeFieldMap"):
            found |= set(_parse(attrs.get(key) or "{}"))
        found |= {f["name"] for f in _parse(attrs.get("fields") or "[]")}
    if obj["type"] == "search":
        found |= set(attrs.get("columns", []))
        found |= {s[0] for s in attrs.get("sort", [])}
    found.discard("___records___")  # Lens' "count of records", not a field
    return found


def _flatten(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        out: set[str] = set()
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]}


def _ident(t: str, n: int) -> NamespaceIdentity:
    return NamespaceIdentity(t, inode=4026531000 + n, dev=4, id=8589934000 + n)


HOST = {t: _ident(t, i) for i, t in enumerate(NS_TYPES, 1)}


def _held(init_pid: int, own: int, /, **host_or_shared: int) -> HeldNamespaces:
    """A container's namespaces: its own (numbered from ``own``) unless given, like runc's."""
    numbers = {t: own + i for i, t in enumerate(NS_TYPES)}
    for t in ("cgroup", "time", "user"):  # Docker's defaults on a cgroup v2 host
        numbers[t] = NS_TYPES.index(t) + 1
    numbers.update(host_or_shared)
    return HeldNamespaces(init_pid, {t: _ident(t, n) for t, n in numbers.items()})


# A demo container: name, log-opts, labels, env, and which namespaces it has ("own", "shares
# web's net and pid", "in the host's pid and net").
Spec = tuple[str, dict[str, str], dict[str, str], dict[str, str], str]


def generic_specs(identity: str = "keys") -> list[Spec]:
    """Containers like the demo's, each sending through both sinks (no docker-compose needed)."""
    opts = {"fluentd-address": "localhost:24224", "elasticsearch-url": "http://localhost:9200",
            "elasticsearch-index": "pylog-direct", "tag": "{{.Name}}", "labels": "app",
            "env": "MODE", "identity": identity}
    return [("demo-web", opts, {"app": "shop", "team": "x"}, {}, "own"),
            ("demo-sidecar", opts, {}, {"MODE": "demo", "DB_PASSWORD": "x"}, "shares-web"),
            ("demo-agent", opts, {}, {}, "host")]


def compose_specs(config: dict[str, Any]) -> list[Spec]:
    """The demo containers as the compose file starts them."""
    s = services(config)
    kinds = {"web": "own", "sidecar": "shares-web", "agent": "host"}
    return [(s[n]["container_name"], demo_log_opts(config, n), dict(s[n].get("labels") or {}),
             {k: str(v) for k, v in (s[n].get("environment") or {}).items()}, kinds[n])
            for n in DEMO]


def demo_contexts(specs: list[Spec]) -> list[tuple[Any, Any]]:
    """(parsed log-opts, record context) as pylog builds them for these containers: the "own"
    one in namespaces of its own, "shares-web" in its network and PID namespaces, "host" in the
    host's (all with NS_GET_ID ids, as on the Linux 6.x these machines run)."""
    net, pid = NS_TYPES.index("net"), NS_TYPES.index("pid")
    held = {"own": _held(1000, 100),
            "shares-web": _held(1100, 200, net=100 + net, pid=100 + pid),
            "host": _held(1200, 300, net=net + 1, pid=pid + 1)}
    ids = {spec[0]: f"{i + 1:x}" * 64 for i, spec in enumerate(specs)}
    registry = NamespaceRegistry()
    for name, *_, kind in specs:
        registry.add(ids[name], held[kind])
    names = {cid: name for name, cid in ids.items()}
    out = []
    for name, log_opts, labels, env, kind in specs:
        info = {"ContainerID": ids[name], "ContainerName": "/" + name,
                "ContainerImageName": "busybox:1.36", "ContainerImageID": "sha256:" + "e" * 64,
                "ContainerLabels": labels, "ContainerEnv": [f"{k}={v}" for k, v in env.items()],
                "Config": log_opts}
        options = parse_log_options(log_opts)  # as at docker run
        out.append((options, build_context(info, options, held[kind], host=HOST,
                                           registry=registry, names=names, host_name="vm")))
    return out


def sent_fields(specs: list[Spec], tmp_path: Path) -> dict[str, set[str]]:
    """Index -> the fields of the records these containers' sinks write there: pylog's JSON
    record (record_json) for its Elasticsearch sink, the fluentd sink's messages as a Forward
    receiver decodes them for fluentd's index (plus the @timestamp fluent.conf adds)."""
    line = LogEntry(source="stdout", time_nano=1_795_319_769_670_262_696,
                    line=b"GET /api/items?page=1 200")
    fluentd_index = fluent_conf()["match"]["index_name"]
    out: dict[str, set[str]] = {}
    for options, ctx in demo_contexts(specs):
        for sink_config in configured_sinks(options):
            if sink_config.kind == ElasticsearchSink.KIND:
                doc = json.loads(record_json(line, ctx, TimestampFormatter()))
                index = sink_config["elasticsearch-index"]
                out.setdefault(index, set()).update(_flatten(doc))
            elif sink_config.kind == FluentdSink.KIND:
                sink = FluentdSink(sink_config, tmp_path)
                receiver = FluentdReceiver()
                for body, option, _ in sink.messages([line], ctx):
                    receiver._handle(msgpack.unpackb(body + option, raw=False,
                                                     ext_hook=_ext_hook))
                (event,) = receiver.events
                # the container's constant pairs (context_pairs) plus Docker's per-line keys
                count, body = context_pairs(ctx)
                flat = list(msgpack.Unpacker(io.BytesIO(body), raw=False))
                pairs = dict(zip(flat[::2], flat[1::2], strict=True))
                assert len(pairs) == count
                assert set(event.record) == set(pairs) | {"source", "log"}
                # fluent.conf's filter, then include_timestamp true
                fields = _flatten(fluentd_filter(event.record)) | {"@timestamp"}
                out.setdefault(fluentd_index, set()).update(fields)
    return out


# What the dashboard is about, as the records must carry it.
REQUIRED = {"@timestamp", "container.name", "pylog.ns_key.net", "pylog.ns_key.pid",
            "pylog.ns_shared.net", "pylog.ns_shared.pid", "pylog.host_ns"}


def test_every_field_the_saved_objects_use_is_one_pylog_sends(
        saved_objects: list[dict[str, Any]], tmp_path: Path) -> None:
    per_index = sent_fields(generic_specs(), tmp_path)
    assert len(per_index) == 2  # pylog's own Elasticsearch sink, and fluentd's
    sent = set().union(*per_index.values())
    assert REQUIRED <= sent
    used: set[str] = set()
    for obj in saved_objects:
        fields = referenced_fields(obj)
        unknown = fields - sent
        assert not unknown, f"{obj['type']} {obj['id']} uses fields pylog never sends: {unknown}"
        used |= fields
    assert REQUIRED <= used, f"the dashboard does not show {REQUIRED - used}"


def test_the_demo_stack_fills_the_dashboard(saved_objects: list[dict[str, Any]],
                                            config: dict[str, Any], tmp_path: Path) -> None:
    """The compose file's own containers produce, in indices the data view covers, every field
    the dashboard shows, each one shared namespace and one host namespace at least."""
    per_index = sent_fields(compose_specs(config), tmp_path)
    title = data_view_title()
    assert len(per_index) == 2 and all(fnmatch.fnmatchcase(i, title) for i in per_index)
    sent = set().union(*per_index.values())
    used = set().union(*(referenced_fields(o) for o in saved_objects))
    # `message` and `log` are the line in the two indices (the saved search shows both)
    assert used - sent == set(), used - sent
    assert REQUIRED <= sent
    shared = [sharing_summary(ctx) for _, ctx in demo_contexts(compose_specs(config))]
    assert {"net": ["demo-web"], "pid": ["demo-web"]} in shared
    hosts = [ctx.record_fields()["pylog"]["host_ns"]
             for _, ctx in demo_contexts(compose_specs(config))]
    assert any({"pid", "net"} <= set(host_ns) for host_ns in hosts)


def test_the_field_check_would_catch_a_misspelt_field(tmp_path: Path) -> None:
    sent = set().union(*sent_fields(generic_specs(), tmp_path).values())
    lens = next(o for o in load_ndjson("dashboard.ndjson") if o["type"] == "lens")
    text = json.dumps(lens).replace('"container.name"', '"container.names"')
    assert "container.names" in referenced_fields(json.loads(text)) - sent
    kql = {"type": "search", "id": "x", "attributes": {"kibanaSavedObjectMeta": {
        "searchSourceJSON": json.dumps({"query": {"query": "pylog.host_nss: pid",
                                                  "language": "kuery"}})}}}
    assert referenced_fields(kql) == {"pylog.host_nss"}


# ---------------------------------------------------------------------------- mappings

def fluentd_template() -> dict[str, Any]:
    conf = fluent_conf()["match"]
    template: dict[str, Any] = json.loads(
        (FLUENTD_DIR / Path(conf["template_file"]).name).read_text())
    return template


def _mapping_type(mappings: dict[str, Any], field: str) -> str | None:
    """The type Elasticsearch gives a field under these mappings (explicit or dynamic)."""
    node: dict[str, Any] = {"properties": mappings.get("properties", {})}
    for part in field.split("."):
        node = node.get("properties", {}).get(part)  # type: ignore[assignment]
        if node is None:
            break
    else:
        return node.get("type", "object")
    for entry in mappings.get("dynamic_templates", []):
        (rule,) = entry.values()
        if fnmatch.fnmatchcase(field, rule["path_match"]):
            return rule["mapping"]["type"]
    return None


def test_fluentd_index_maps_shared_fields_as_pylog_does(tmp_path: Path) -> None:
    template = fluentd_template()
    conf = fluent_conf()["match"]
    assert template["index_patterns"] == [conf["index_name"]]
    ours = template["template"]["mappings"]
    pylog_mappings = template_mappings()
    assert ours["dynamic_templates"] == pylog_mappings["dynamic_templates"]
    for key, mapping in pylog_mappings["properties"].items():
        assert ours["properties"][key] == mapping, key
    # every field of a fluentd record is mapped, and as pylog maps it in its own index: the
    # data view over both indices has no conflicting types (only labels/env that Docker's
    # fluentd driver puts at the top level are left to dynamic mapping); with identity=full
    # too (inodes, ids, the host's ids, the image id)
    for identity in ("keys", "full"):
        per_index = sent_fields(generic_specs(identity), tmp_path)
        top_level = set()
        for _, ctx in demo_contexts(generic_specs(identity)):
            top_level |= set(ctx.labels) | set(ctx.env)
        direct = next(i for i in per_index if i != conf["index_name"])
        if identity == "full":
            assert {"pylog.ns_inode.net", "pylog.ns_id.net"} <= per_index[direct]
        for field in per_index[conf["index_name"]] - top_level:
            kind = _mapping_type(ours, field)
            assert kind is not None, f"{field} is not mapped in {conf['template_file']}"
            if field in per_index[direct]:
                assert kind == _mapping_type(pylog_mappings, field), (identity, field)
        # the filter's container.id and container.name are what pylog's own sink writes
        assert {"container.id", "container.name"} <= per_index[conf["index_name"]]


def test_dashboard_aggregates_only_aggregatable_fields(
        saved_objects: list[dict[str, Any]]) -> None:
    aggregatable = {"keyword", "long", "boolean", "date", "date_nanos"}
    ours = fluentd_template()["template"]["mappings"]
    for lens in (o for o in saved_objects if o["type"] == "lens"):
        layers = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
        for layer in layers.values():
            for column in layer["columns"].values():
                field = column["sourceField"]
                if field == "___records___":
                    continue
                for mappings in (template_mappings(), ours):
                    assert _mapping_type(mappings, field) in aggregatable, (lens["id"], field)


# ============================================================================ the setup script

class _FakeKibana(http.server.BaseHTTPRequestHandler):
    """Answers /api/status and /api/saved_objects/_import as Kibana 8 does, checking what the
    import API requires (kbn-xsrf, a multipart `file` part whose name ends in .ndjson)."""

    imports: ClassVar[list[tuple[str, str, bytes]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/status":
            self._answer(200, {"name": "kibana", "status": {
                "overall": {"level": "degraded", "summary": "1 service is degraded"},
                "core": {"elasticsearch": {"level": "available", "summary": "ready"},
                         "savedObjects": {"level": "available", "summary": "ready"}}}})
        else:
            self._answer(404, {"statusCode": 404})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if not self.path.startswith("/api/saved_objects/_import"):
            return self._answer(404, {"statusCode": 404})
        if self.headers.get("kbn-xsrf") is None:
            return self._answer(400, {"statusCode": 400, "message": "Request must contain a "
                                      "kbn-xsrf header."})
        m = re.match(r'multipart/form-data; boundary=(\S+)', self.headers["Content-Type"])
        assert m is not None
        (part,) = [p for p in body.split(b"--" + m[1].encode()) if b"name=\"file\"" in p]
        head, _, content = part.partition(b"\r\n\r\n")
        filename = re.search(rb'filename="([^"]+)"', head)
        if filename is None or not filename[1].endswith(b".ndjson"):
            return self._answer(415, {"statusCode": 415, "message": "Unsupported file extension"})
        content = content[:-2]  # the CRLF before the next boundary
        objs = [json.loads(line) for line in content.decode().splitlines() if line]
        self.imports.append((self.path, filename[1].decode(), content))
        self._answer(200, {"success": True, "successCount": len(objs), "successResults": []})


@pytest.fixture
def fake_kibana() -> Iterator[str]:
    _FakeKibana.imports = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeKibana)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_setup_script_imports_both_files_in_order(fake_kibana: str) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the setup script runs in the curlimages/curl image)")
    proc = subprocess.run(["sh", str(KIBANA_DIR / "setup.sh")], check=False, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "KIBANA_URL": fake_kibana})
    assert proc.returncode == 0, proc.stderr
    assert [(path, name) for path, name, _ in _FakeKibana.imports] == [
        ("/api/saved_objects/_import?overwrite=true", name) for name in NDJSON_FILES]
    for _, name, content in _FakeKibana.imports:
        assert content == (KIBANA_DIR / name).read_bytes()  # sent whole and unchanged


def test_setup_script_fails_when_kibana_refuses(fake_kibana: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the setup script runs in the curlimages/curl image)")
    script = (KIBANA_DIR / "setup.sh").read_text().replace("-H 'kbn-xsrf: true' ", "")
    (tmp_path / "setup.sh").write_text(script)
    for name in NDJSON_FILES:
        shutil.copy(KIBANA_DIR / name, tmp_path / name)
    proc = subprocess.run(["sh", str(tmp_path / "setup.sh")], check=False, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "KIBANA_URL": fake_kibana})
    assert proc.returncode != 0
    assert "kbn-xsrf" in proc.stderr and not _FakeKibana.imports


def test_kibana_healthcheck_passes_on_a_ready_kibana(fake_kibana: str,
                                                    config: dict[str, Any]) -> None:
    """The healthcheck kibana-setup waits for says "ready" when the saved objects are, even
    with another Kibana service degraded, and "not ready" while Kibana does not answer."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the healthcheck runs in Kibana's image)")
    kind, command = services(config)["kibana"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "http://localhost:5601/" in command
    env = {"PATH": "/usr/bin:/bin"}
    ready = subprocess.run(["sh", "-c", command.replace("http://localhost:5601", fake_kibana)],
                           check=False, env=env, timeout=30)
    assert ready.returncode == 0
    nobody = subprocess.run(["sh", "-c", command.replace("localhost:5601", "127.0.0.1:9")],
                            check=False, env=env, timeout=30, capture_output=True)
    assert nobody.returncode != 0
