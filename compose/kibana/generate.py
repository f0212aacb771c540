#!/usr/bin/env python3
"""Write the Kibana saved objects of the pylog demo stack: data-view.ndjson and dashboard.ndjson.

Kibana keeps Lens and dashboard state as JSON inside JSON, unreadable by hand; the objects are
described here and serialised. After editing this file run it (stdlib only):

    python3 compose/kibana/generate.py

tests/test_compose.py checks that the .ndjson files are what this script writes, that every
reference resolves and that every field named here is one pylog really sends.

Format: Kibana 8.9 or later 8.x (Lens `formBased` layers, `typeMigrationVersion`); each object is
stamped with a migration version no newer than what 8.9 knows, so Kibana migrates it forward on
import. Lens panels are saved objects of their own, referenced by the dashboard ("by
reference"), which every 8.x dashboard loads.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

DATA_VIEW_ID = "pylog-records"
# pylog's Elasticsearch sink writes pylog-direct, fluentd writes pylog-fluentd (docker-compose.yml)
DATA_VIEW_TITLE = "pylog-*"
DASHBOARD_ID = "pylog-namespaces"

CORE = "8.8.0"  # coreMigrationVersion: the saved-object document format of Kibana >= 8.8
HOST_NS_QUERY = "pylog.host_ns: pid or pylog.host_ns: net"


def _id(name: str) -> str:
    """A stable UUID for a Lens layer or column (Kibana uses UUIDs; any stable string works)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pylog-compose/{name}"))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------------------------- data view

def data_view() -> dict[str, Any]:
    number_plain = {"id": "number", "params": {"pattern": "0"}}  # no thousands separators
    # Only the fields of the default records (identity=keys): an inode or NS_GET_ID id is in
    # records with --log-opt identity=full alone, and pylog inspect shows them for every container.
    formats = {"process.pid": number_plain}
    labels: dict[str, dict[str, str]] = {"pylog.host_ns": {"customLabel": "the host's namespaces"}}
    for t in ("net", "pid"):
        labels[f"pylog.ns_key.{t}"] = {"customLabel": f"{t} namespace key"}
        labels[f"pylog.ns_shared.{t}"] = {"customLabel": f"shares its {t} namespace with"}
    return {
        "type": "index-pattern",
        "id": DATA_VIEW_ID,
        "coreMigrationVersion": CORE,
        "typeMigrationVersion": "8.0.0",
        "attributes": {
            "title": DATA_VIEW_TITLE,
            "name": "pylog records",
            "timeFieldName": "@timestamp",
            "fields": "[]",  # Kibana reads the fields from the indices' mappings
            "fieldFormatMap": _dumps(formats),
            "fieldAttrs": _dumps(labels),
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "typeMeta": "{}",
            "allowNoIndex": True,  # usable before the first record arrives
        },
        "references": [],
    }


# ----------------------------------------------------------------------------- Lens columns

def count(name: str, label: str = "Log lines") -> tuple[str, dict[str, Any]]:
    return _id(name), {"label": label, "customLabel": True, "dataType": "number",
                       "operationType": "count", "isBucketed": False, "scale": "ratio",
                       "sourceField": "___records___", "params": {"emptyAsNull": True}}


def over_time(name: str) -> tuple[str, dict[str, Any]]:
    return _id(name), {"label": "@timestamp", "dataType": "date",
                       "operationType": "date_histogram", "sourceField": "@timestamp",
                       "isBucketed": True, "scale": "interval",
                       "params": {"interval": "auto", "includeEmptyRows": True,
                                  "dropPartials": False}}


def terms(name: str, field: str, label: str, order_by: str, data_type: str = "string",
          size: int = 10, missing: bool = False,
          include: tuple[str, ...] = ()) -> tuple[str, dict[str, Any]]:
    return _id(name), {"label": label, "customLabel": True, "dataType": data_type,
                       "operationType": "terms", "sourceField": field, "isBucketed": True,
                       "scale": "ordinal",
                       "params": {"size": size,
                                  "orderBy": {"type": "column", "columnId": order_by},
                                  "orderDirection": "desc", "otherBucket": False,
                                  "missingBucket": missing, "parentFormat": {"id": "terms"},
                                  "include": list(include), "exclude": [], "includeIsRegex": False,
                                  "excludeIsRegex": False}}


def last_value(name: str, field: str, label: str) -> tuple[str, dict[str, Any]]:
    return _id(name), {"label": label, "customLabel": True, "dataType": "string",
                       "operationType": "last_value", "isBucketed": False, "scale": "ordinal",
                       "sourceField": field,
                       "params": {"sortField": "@timestamp", "showArrayValues": True}}


# ----------------------------------------------------------------------------- Lens objects

def lens(obj_id: str, title: str, description: str, vis_type: str, layer: str,
         columns: list[tuple[str, dict[str, Any]]], visualization: dict[str, Any],
         query: str = "") -> dict[str, Any]:
    """A Lens saved object with one data layer over the pylog data view."""
    return {
        "type": "lens",
        "id": obj_id,
        "coreMigrationVersion": CORE,
        "typeMigrationVersion": "8.9.0",
        "attributes": {
            "title": title,
            "description": description,
            "visualizationType": vis_type,
            "state": {
                "visualization": visualization,
                "query": {"query": query, "language": "kuery"},
                "filters": [],
                "datasourceStates": {"formBased": {"layers": {layer: {
                    "columns": dict(columns),
                    "columnOrder": [cid for cid, _ in columns],
                    "incompleteColumns": {},
                }}}},
                "internalReferences": [],
                "adHocDataViews": {},
            },
        },
        "references": [{"type": "index-pattern", "id": DATA_VIEW_ID,
                        "name": f"indexpattern-datasource-layer-{layer}"}],
    }


def xy(layer: str, series: str, x: str, y: str, split: str | None) -> dict[str, Any]:
    data_layer: dict[str, Any] = {"layerId": layer, "layerType": "data", "seriesType": series,
                                  "xAccessor": x, "accessors": [y]}
    if split is not None:
        data_layer["splitAccessor"] = split
    return {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
            "fittingFunction": "None", "preferredSeriesType": series,
            "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "tickLabelsVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "gridlinesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
            "layers": [data_layer]}


def table(layer: str, columns: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"layerId": layer, "layerType": "data",
            "columns": [{"columnId": cid, "isTransposed": False} for cid, _ in columns]}


def lens_lines_per_container() -> dict[str, Any]:
    layer = _id("per-container/layer")
    t, n = over_time("per-container/time"), count("per-container/count")
    c = terms("per-container/name", "container.name", "Container", n[0])
    return lens("pylog-lines-per-container", "Log lines per container",
                "Lines each container wrote (container.name), over time.",
                "lnsXY", layer, [t, c, n], xy(layer, "bar_stacked", t[0], n[0], c[0]))


def lens_lines_per_netns() -> dict[str, Any]:
    layer = _id("per-netns/layer")
    n = count("per-netns/count")
    ns = terms("per-netns/key", "pylog.ns_key.net", "Network namespace (key)", n[0])
    c = terms("per-netns/name", "container.name", "Container", n[0])
    return lens("pylog-lines-per-netns", "Log lines per network namespace",
                "One bar per network namespace (pylog.ns_key.net, which unlike the inode never "
                "names two namespaces), split by the containers in it: containers that share "
                "a namespace stack up in one bar.",
                "lnsXY", layer, [ns, c, n], xy(layer, "bar_horizontal_stacked", ns[0], n[0], c[0]))


def lens_sharing_table() -> dict[str, Any]:
    layer = _id("sharing/layer")
    n = count("sharing/count")
    cols = [
        terms("sharing/net", "pylog.ns_key.net", "net namespace key", n[0], size=20),
        terms("sharing/pid", "pylog.ns_key.pid", "pid namespace key", n[0], size=20),
        terms("sharing/name", "container.name", "Container", n[0], size=50),
        last_value("sharing/net-shared", "pylog.ns_shared.net", "net shared with"),
        last_value("sharing/pid-shared", "pylog.ns_shared.pid", "pid shared with"),
        n,
    ]
    return lens("pylog-namespace-sharing", "Which containers share namespaces",
                "Containers by network and PID namespace key (never names two namespaces, on "
                "every kernel, across hosts and boots), with the other attached containers "
                "pylog saw in the same namespace (pylog.ns_shared, left out for the host's "
                "namespaces).",
                "lnsDatatable", layer, cols, table(layer, cols))


def lens_host_namespaces() -> dict[str, Any]:
    layer = _id("host-ns/layer")
    n = count("host-ns/count")
    cols = [
        terms("host-ns/name", "container.name", "Container", n[0], size=50),
        # one row per container and host namespace, pid and net only: by Docker's defaults
        # every container is in the host's time and user namespaces (and cgroup, on cgroup v1)
        terms("host-ns/types", "pylog.host_ns", "the host's namespaces", n[0], size=2,
              include=("net", "pid")),
        n,
    ]
    return lens("pylog-host-namespaces", "Containers in the host's PID or network namespace",
                f"Records with {HOST_NS_QUERY} (docker run --pid host / --net host).",
                "lnsDatatable", layer, cols, table(layer, cols), query=HOST_NS_QUERY)


def search_host_namespaces() -> dict[str, Any]:
    source = {"query": {"query": HOST_NS_QUERY, "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {
        "type": "search",
        "id": "pylog-host-namespace-lines",
        "coreMigrationVersion": CORE,
        "typeMigrationVersion": "8.0.0",
        "attributes": {
            "title": "pylog: lines from containers in the host's namespaces",
            "description": "The line is `message` in records from pylog's Elasticsearch sink "
                           "(index pylog-direct) and `log` in records that came through fluentd "
                           "(pylog-fluentd, Docker's fluentd key).",
            "columns": ["container.name", "pylog.host_ns", "message", "log"],
            "sort": [["@timestamp", "desc"]],
            "grid": {},
            "hideChart": False,
            "isTextBasedQuery": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _dumps(source)},
        },
        "references": [{"type": "index-pattern", "id": DATA_VIEW_ID,
                        "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}],
    }


# ----------------------------------------------------------------------------- dashboard

def dashboard(panels: list[tuple[dict[str, Any], dict[str, int]]]) -> dict[str, Any]:
    saved_panels, references = [], []
    for i, (obj, grid) in enumerate(panels, start=1):
        pid = f"p{i}"
        saved_panels.append({"type": obj["type"], "version": "8.9.0",
                             "gridData": {**grid, "i": pid}, "panelIndex": pid,
                             "embeddableConfig": {"enhancements": {}},
                             "panelRefName": f"panel_{pid}"})
        references.append({"type": obj["type"], "id": obj["id"], "name": f"{pid}:panel_{pid}"})
    return {
        "type": "dashboard",
        "id": DASHBOARD_ID,
        "coreMigrationVersion": CORE,
        "typeMigrationVersion": "8.9.0",
        "attributes": {
            "title": "pylog: containers and their namespaces",
            "description": "What pylog's namespace enrichment says about the running containers: "
                           "log volume per container and per network namespace, who shares which "
                           "namespace, and who runs in the host's.",
            "panelsJSON": _dumps(saved_panels),
            "optionsJSON": _dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "hidePanelTitles": False}),
            "timeRestore": True,
            "timeFrom": "now-15m",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 10000},
            "kibanaSavedObjectMeta": {"searchSourceJSON": _dumps(
                {"query": {"query": "", "language": "kuery"}, "filter": []})},
        },
        "references": references,
    }


def objects() -> dict[str, list[dict[str, Any]]]:
    """File name -> the saved objects it holds, in import order."""
    per_container = lens_lines_per_container()
    per_netns = lens_lines_per_netns()
    sharing = lens_sharing_table()
    host_ns = lens_host_namespaces()
    lines = search_host_namespaces()
    board = dashboard([
        (per_container, {"x": 0, "y": 0, "w": 24, "h": 14}),
        (per_netns, {"x": 24, "y": 0, "w": 24, "h": 14}),
        (sharing, {"x": 0, "y": 14, "w": 48, "h": 12}),
        (host_ns, {"x": 0, "y": 26, "w": 20, "h": 12}),
        (lines, {"x": 20, "y": 26, "w": 28, "h": 12}),
    ])
    return {
        "data-view.ndjson": [data_view()],
        "dashboard.ndjson": [per_container, per_netns, sharing, host_ns, lines, board],
    }


def render(objs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, sort_keys=True, ensure_ascii=False) + "\n" for o in objs)


def main() -> None:
    for name, objs in objects().items():
        (HERE / name).write_text(render(objs), encoding="utf-8")
        print(f"wrote {HERE / name} ({len(objs)} objects)")


if __name__ == "__main__":
    main()
