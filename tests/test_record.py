"""What a record says: the container's context (built once), its JSON forms, and ``pylog ps``."""

from __future__ import annotations

import calendar
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylog.cli import NS_COLUMNS, format_ps
from pylog.entry import LogEntry
from pylog.frames import Columns
from pylog.hostid import HostIdentity, host_identity
from pylog.namespaces import HeldNamespaces, NamespaceIdentity
from pylog.nsregistry import NamespaceRegistry, namespace_key
from pylog.options import parse_log_options
from pylog.record import (
    TimestampFormatter,
    build_context,
    context_from_fields,
    env_map,
    plain_text,
    record_json,
    records,
    select,
)
from tests.helpers_records import record_dict, sharing_summary

VECTORS = Path(__file__).parent / "vectors"
TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{9})Z$")
# 2026-11-22T03:56:09Z, the second the basic vector's container was created
BASE = calendar.timegm((2026, 11, 22, 3, 56, 9, 0, 0, 0)) * 10**9


def basic_info() -> dict:
    with open(VECTORS / "requests.jsonl") as f:
        calls = [json.loads(line) for line in f if line.strip()]
    return next(c["body"]["Info"] for c in calls if c["path"] == "/LogDriver.StartLogging")


@pytest.fixture
def info():
    return basic_info()


@pytest.fixture
def options(info):
    return parse_log_options(info["Config"])


def ts_to_ns(text: str) -> int:
    m = TS_RE.match(text)
    assert m, f"not RFC 3339 with 9 fractional digits: {text!r}"
    secs = calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0))
    return secs * 10**9 + int(m[7])


def ident(t: str, n: int, with_id: bool = True) -> NamespaceIdentity:
    return NamespaceIdentity(t, inode=4026532000 + n, dev=4,
                             id=(8589934000 + n) if with_id else None)


def held(pid: int, /, **numbers: int) -> HeldNamespaces:
    return HeldNamespaces(pid, {t: ident(t, n) for t, n in numbers.items()})


# Host namespaces are 1..8, containers' from 100 on.
HOST = {t: ident(t, i) for i, t in enumerate(NS_COLUMNS, start=1)}
HOST_N = {t: i for i, t in enumerate(NS_COLUMNS, start=1)}


# ------------------------------------------------------------------ identity, labels, env

def test_basic_vector_context(info, options):
    ctx = build_context(info, options, host_name="node-1")
    assert ctx.container_id == info["ContainerID"]
    assert ctx.name == "basic"
    assert ctx.image_name == "busybox:local"
    assert ctx.image_id == info["ContainerImageID"]
    assert ctx.tag == f"basic/{info['ContainerID'][:12]}"
    assert dict(ctx.labels) == {"app": "demo"}   # labels=app: not team
    assert dict(ctx.env) == {"MODE": "prod"}     # env=MODE: never SECRET
    assert ctx.fields() == {
        "tag": f"basic/{info['ContainerID'][:12]}",
        "container": {"id": info["ContainerID"], "name": "basic",
                      "image": {"name": "busybox:local", "id": info["ContainerImageID"]},
                      "labels": {"app": "demo"}},
        "host": {"name": "node-1", "id": MACHINE.machine_id, "boot": {"id": MACHINE.boot_id}},
        "pylog": {"env": {"MODE": "prod"}},
    }


MACHINE = host_identity()


def test_this_machine_has_both_ids() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", MACHINE.machine_id)
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", MACHINE.boot_id)


def test_host_identity_comes_from_pid_1s_root_and_the_kernel(tmp_path) -> None:
    """The machine id is the host's (PID 1's root: the managed plugin's own image may have
    another one); the boot id is the kernel's."""
    (tmp_path / "1/root/etc").mkdir(parents=True)
    (tmp_path / "1/root/etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "sys/kernel/random").mkdir(parents=True)
    (tmp_path / "sys/kernel/random/boot_id").write_text("88a1f0ed-5ae5-41ee-af6b-41921c311872\n")
    got = host_identity(str(tmp_path))
    assert got == HostIdentity("0123456789abcdef0123456789abcdef",
                               "88a1f0ed-5ae5-41ee-af6b-41921c311872")


def test_host_ids_and_the_hosts_pid_namespace_are_kept_with_a_saved_context(info, options):
    ctx = build_context(info, options, held(4242, net=100, pid=101), HOST, host_name="node-1")
    host = ctx.fields()["host"]
    assert host["pid_ns_ino"] == HOST["pid"].inode  # ECS host.pid_ns_ino
    assert host["id"] == MACHINE.machine_id and host["boot"]["id"] == MACHINE.boot_id
    again = context_from_fields(json.loads(json.dumps(ctx.fields())))
    assert again.fields() == ctx.fields()  # read back after a reboot: the boot it ran in


def test_records_name_namespaces_by_key_and_identity_full_adds_the_rest(info):
    host_ns = {t: ident(t, 900 + i) for i, t in enumerate(("pid", "user"))}
    full = parse_log_options({"identity": "full"})
    for opts, is_full in ((parse_log_options({}), False), (full, True)):
        ctx = build_context(info, opts, held(4242, net=100, pid=900), host_ns,
                            registry=NamespaceRegistry(host_ns), host_name="node-1")
        rec = ctx.record_fields()
        whole = ctx.fields()["pylog"]["ns"]
        assert rec["pylog"]["ns_key"] == {t: v["key"] for t, v in whole.items()}
        assert rec["pylog"]["host_ns"] == ["pid"]
        assert ("ns_inode" in rec["pylog"], "id" in rec["host"], "boot" in rec["host"],
                "pid_ns_ino" in rec["host"], "id" in rec["container"]["image"]) == (is_full,) * 5
        if is_full:
            assert rec["pylog"]["ns_inode"] == {t: v["inode"] for t, v in whole.items()}
            assert rec["pylog"]["ns_id"] == {t: v["id"] for t, v in whole.items()}
            assert rec["host"] == ctx.fields()["host"]
        # a stopped container's records, from its saved context, say the same
        again = context_from_fields(json.loads(json.dumps(ctx.fields())))
        assert again.record_fields() == rec and again.json_fragment == ctx.json_fragment


def test_secret_env_never_appears_anywhere(info, options):
    ctx = build_context(info, options)
    entry = LogEntry(source="stdout", time_nano=BASE, line=b"hello stdout")
    ts = TimestampFormatter()
    for text in (json.dumps(ctx.fields()), ctx.json_fragment, record_json(entry, ctx, ts),
                 json.dumps(record_dict(entry, ctx, ts)), *records([entry], ctx)):
        assert "SECRET" not in text
        assert "team" not in text and "core" not in text  # the label not asked for


def test_without_labels_or_env_options_nothing_is_passed_on(info):
    ctx = build_context(info, parse_log_options({}), host_name="h")
    assert "labels" not in ctx.fields()["container"]
    assert "pylog" not in ctx.fields()
    assert ctx.tag == info["ContainerID"][:12]  # Docker's default tag


def test_label_keys_with_dots_are_de_dotted(info):
    info["ContainerLabels"] = {"com.example.team": "core", "com.example": "x",
                               "org.opencontainers.image.version": "1.2", "app": "demo"}
    options = parse_log_options({"labels": "com.example.team,com.example",
                                 "labels-regex": r"^org\.opencontainers\."})
    ctx = build_context(info, options)
    labels = ctx.fields()["container"]["labels"]
    assert labels == {"com_example_team": "core", "com_example": "x",
                      "org_opencontainers_image_version": "1.2"}
    assert not any("." in k for k in json.loads("{" + ctx.json_fragment + "}")["container"]
                   ["labels"])


def test_env_regex_and_names_select(info):
    info["ContainerEnv"] = ["SECRET=x", "MODE=prod", "APP_PORT=80", "APP_HOST=a=b", "NOVALUE"]
    options = parse_log_options({"env": "MODE", "env-regex": "^APP_"})
    ctx = build_context(info, options)
    assert dict(ctx.env) == {"MODE": "prod", "APP_PORT": "80", "APP_HOST": "a=b"}


def test_env_map_and_select():
    assert env_map(["A=1", "B=x=y", "C=", "D"]) == {"A": "1", "B": "x=y", "C": "", "D": ""}
    assert env_map(None) == {}
    pairs = {"a": "1", "b": "2", "abc": "3"}
    assert select(pairs, ["a"], None) == {"a": "1"}
    assert select(pairs, [], re.compile("^ab")) == {"abc": "3"}
    assert select(pairs, ["b"], re.compile("c$")) == {"b": "2", "abc": "3"}
    assert select(pairs, [], None) == {}


# ------------------------------------------------------------------ namespaces

WEB_ID = "a" * 64
SIDECAR_ID = "b" * 64
STRANGER_ID = "c" * 64


def test_namespaces_inode_id_and_is_host(info, options):
    h = held(4242, cgroup=101, ipc=102, mnt=103, net=HOST_N["net"], pid=105, time=HOST_N["time"],
             user=HOST_N["user"], uts=108)
    ctx = build_context(info, options, held=h, host=HOST)
    ns = ctx.fields()["pylog"]["ns"]
    assert sorted(ns) == sorted(NS_COLUMNS)
    assert ctx.fields()["process"] == {"pid": 4242}
    for t, v in ns.items():
        assert v["inode"] == h.identities[t].inode
        assert v["id"] == h.identities[t].id
        assert v["is_host"] is (t in ("net", "time", "user"))
        assert "shared_with" not in v  # no registry: nothing shared
    assert ctx.fields()["pylog"]["env"] == {"MODE": "prod"}  # namespaces add, not replace


def test_a_private_time_namespace_as_docker_29_5_gives_is_not_the_hosts(info, options):
    """Up to Docker 29.4 a container shares the host's time namespace; from 29.5 it has one of
    its own."""
    a = build_context(info, options, held=held(1, time=HOST_N["time"]), host=HOST)
    b = build_context(info, options, held=held(2, time=300), host=HOST)
    assert a.fields()["pylog"]["ns"]["time"]["is_host"] is True
    assert b.fields()["pylog"]["ns"]["time"] == {
        "key": namespace_key(host_identity().boot_id, ident("time", 300)),
        "inode": HOST["time"].inode - HOST_N["time"] + 300, "id": 8589934300, "is_host": False}


def test_recycled_inode_is_not_the_host(info, options):
    # Same inode as the host's net namespace, different never-reused id: not the host's.
    h = HeldNamespaces(1, {"net": NamespaceIdentity("net", HOST["net"].inode, 4, 999)})
    assert build_context(info, options, held=h, host=HOST).fields()["pylog"]["ns"]["net"][
        "is_host"] is False


def test_without_ns_get_id_the_inode_decides(info, options):
    host = {"net": ident("net", 1, with_id=False)}
    h = HeldNamespaces(1, {"net": ident("net", 1, with_id=False),
                           "uts": ident("uts", 2, with_id=False)})
    reg = NamespaceRegistry(host)
    reg.add(info["ContainerID"], h)
    ns = build_context(info, options, held=h, host=host, registry=reg).fields()["pylog"]["ns"]
    boot = host_identity().boot_id
    # no "id" at all; the host's key is its inode's (it lives as long as the boot), the
    # container's has a lifetime of its own drawn (the inode alone can name another one later)
    assert ns["net"] == {"key": namespace_key(boot, host["net"]), "inode": 4026532001,
                         "is_host": True}
    assert ns["uts"]["key"] != namespace_key(boot, h.identities["uts"])
    assert ns["uts"] == {"key": ns["uts"]["key"], "inode": 4026532002, "is_host": False}


def test_without_host_dict_nothing_is_host(info, options):
    h = held(1, net=HOST_N["net"])
    assert build_context(info, options, held=h).fields()["pylog"]["ns"]["net"]["is_host"] is False


def test_shared_with_names_the_other_registered_containers(info, options):
    info["ContainerID"] = WEB_ID
    reg = NamespaceRegistry()
    web = held(100, net=200, pid=201, mnt=202, uts=HOST_N["uts"])
    sidecar = held(110, net=200, pid=201, mnt=212, uts=HOST_N["uts"])   # --net/--pid=container:web
    stranger = held(120, net=200, mnt=222)  # not in `names`: shown by its short ID
    lonely = held(130, net=230, mnt=232, uts=HOST_N["uts"])
    for cid, h in ((WEB_ID, web), (SIDECAR_ID, sidecar), (STRANGER_ID, stranger),
                   ("d" * 64, lonely)):
        reg.add(cid, h)
    names = {WEB_ID: "web", SIDECAR_ID: "sidecar", "d" * 64: "lonely"}
    ctx = build_context(info, options, held=web, host=HOST, registry=reg, names=names)
    ns = ctx.fields()["pylog"]["ns"]
    assert ns["net"]["shared_with"] == sorted(["sidecar", STRANGER_ID[:12]])
    assert ns["pid"]["shared_with"] == ["sidecar"]
    assert "shared_with" not in ns["mnt"]  # its own: the key is left out, not []
    # Everybody is in the host's UTS namespace: is_host says so, no list of every container.
    assert ns["uts"] == {"key": reg.key_of(HOST["uts"]), "inode": HOST["uts"].inode,
                         "id": HOST["uts"].id, "is_host": True}
    assert ns["net"]["key"] == reg.key_of(sidecar.identities["net"]) != ns["mnt"]["key"]
    assert sharing_summary(ctx) == {"net": sorted(["sidecar", STRANGER_ID[:12]]),
                                     "pid": ["sidecar"]}
    # and the JSON a record carries says the same, each namespace by its key
    pylog = json.loads("{" + ctx.json_fragment + "}")["pylog"]
    assert pylog["ns_key"] == {t: v["key"] for t, v in ns.items()}
    assert pylog["host_ns"] == sorted(t for t, v in ns.items() if v["is_host"]) == ["uts"]
    assert pylog["ns_shared"] == {"net": sorted(["sidecar", STRANGER_ID[:12]]),
                                  "pid": ["sidecar"]}
    assert "ns_inode" not in pylog and "ns_id" not in pylog


# ------------------------------------------------------------------ records

def entry(line: bytes, ns: int = BASE + 670_262_696, source: str = "stdout") -> LogEntry:
    return LogEntry(source=source, time_nano=ns, line=line)


@pytest.fixture
def ctx(info, options):
    reg = NamespaceRegistry()
    info["ContainerID"] = WEB_ID
    web = held(100, net=200, pid=HOST_N["pid"], mnt=202)
    reg.add(WEB_ID, web)
    reg.add(SIDECAR_ID, held(110, net=200, mnt=212))
    return build_context(info, options, held=web, host=HOST, registry=reg,
                         names={SIDECAR_ID: "sidecar"}, host_name="node-1")


@pytest.mark.parametrize("line,message", [
    (b"hello stdout", "hello stdout"),
    (b"bad utf8: \xff\xfe end", "bad utf8: \ufffd\ufffd end"),
    (b"tab\tand\rcr", "tab\tand\rcr"),
    (b"", ""),
    ("emoji \U0001f433".encode(), "emoji \U0001f433"),
    (b'quote " and \\ backslash \x00 nul', 'quote " and \\ backslash \x00 nul'),
    (b"embedded\nnewline", "embedded\nnewline"),
])
def test_record_json_is_one_valid_json_line(ctx, line, message):
    ts = TimestampFormatter()
    e = entry(line, source="stderr")
    text = record_json(e, ctx, ts)
    assert "\n" not in text and "\r" not in text
    doc = json.loads(text)
    assert doc["message"] == message
    assert doc["stream"] == "stderr"
    assert doc["@timestamp"] == "2026-11-22T03:56:09.670262696Z"
    assert doc["container"]["name"] == "basic"
    assert doc["pylog"]["ns_shared"]["net"] == ["sidecar"]
    assert "pid" in doc["pylog"]["host_ns"]
    assert doc == record_dict(e, ctx, TimestampFormatter())  # both forms say the same
    assert list(doc)[:3] == ["@timestamp", "message", "stream"]


def test_records_are_record_json_per_line(ctx):
    lines = [entry(b"one"), entry(b"two \xff", ns=BASE + 1_000_000_000), entry(b""),
             LogEntry(source="stderr", time_nano=BASE - 1, line=b'"q" \\ \n\t\x00 \xe2\x82')]
    assert records(lines, ctx) == [record_json(e, ctx, TimestampFormatter()) for e in lines]
    assert records([], ctx) == []


_TIMES = st.integers(min_value=0, max_value=calendar.timegm((2200, 1, 1, 0, 0, 0)) * 10**9)


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), _TIMES, st.binary(max_size=40)),
                max_size=40))
def test_records_of_any_batch_are_the_line_by_line_records(batch):
    """records() builds a column at a time; record_json one line at a time, plainly: they
    must give the same text for any lines, as entries and as columns."""
    ctx = build_context(json.loads((VECTORS / "requests.jsonl").read_text().splitlines()[2])
                        ["body"]["Info"], parse_log_options({}), host_name="h")
    entries = [LogEntry(source=s, time_nano=t, line=b) for s, t, b in batch]
    expected = [record_json(e, ctx, TimestampFormatter()) for e in entries]
    assert records(entries, ctx) == expected
    columns = Columns([s for s, _, _ in batch], [t for _, t, _ in batch], [b for _, _, b in batch])
    assert records(columns, ctx) == expected
    for text in expected:
        assert json.loads(text)["message"] is not None


def test_timestamp_has_nine_digits_across_a_second_boundary():
    ts = TimestampFormatter()  # one formatter: it caches the date part per second
    times = [BASE + 999_999_999, BASE + 1_000_000_000, BASE + 1_000_000_001,
             BASE + 5,  # an earlier line (stderr vs stdout) after a later one
             BASE + 61 * 10**9 + 7,  # next minute
             calendar.timegm((2026, 12, 31, 23, 59, 59)) * 10**9 + 999_999_999,
             calendar.timegm((2027, 1, 1, 0, 0, 0)) * 10**9]
    got = [ts(n) for n in times]
    assert got[:3] == ["2026-11-22T03:56:09.999999999Z", "2026-11-22T03:56:10.000000000Z",
                       "2026-11-22T03:56:10.000000001Z"]
    assert got[3] == "2026-11-22T03:56:09.000000005Z"
    assert got[5:] == ["2026-12-31T23:59:59.999999999Z", "2027-01-01T00:00:00.000000000Z"]
    for n, text in zip(times, got):
        assert ts_to_ns(text) == n


def test_record_timestamp_is_the_entrys_time(ctx):
    ts = TimestampFormatter()
    for n in (BASE + 999_999_999, BASE + 1_000_000_000, BASE + 2_000_000_001):
        doc = json.loads(record_json(entry(b"x", ns=n), ctx, ts))
        assert ts_to_ns(doc["@timestamp"]) == n


@given(st.lists(st.integers(min_value=0, max_value=calendar.timegm((2200, 1, 1, 0, 0, 0)) * 10**9),
                min_size=1, max_size=30))
def test_timestamp_formatter_is_exact_for_any_sequence(times):
    ts = TimestampFormatter()
    for n in times:
        assert ts_to_ns(ts(n)) == n


def test_context_from_fields_round_trips(ctx):
    assert context_from_fields(ctx.fields()) == ctx
    # as saved in the store: through JSON text
    back = context_from_fields(json.loads(json.dumps(ctx.fields())))
    assert back == ctx
    assert back.fields() == ctx.fields()
    assert back.json_fragment == ctx.json_fragment


@pytest.mark.parametrize("variant", ["bare", "no-ids", "found-nothing"])
def test_context_from_fields_round_trips_variants(info, variant):
    options = parse_log_options({})
    if variant == "bare":
        ctx = build_context(info, options, host_name="h")
    elif variant == "no-ids":
        h = HeldNamespaces(7, {t: ident(t, 50 + i, with_id=False)
                               for i, t in enumerate(NS_COLUMNS)})
        ctx = build_context(info, options, held=h, host={"net": ident("net", 50 + 3, False)})
    else:
        ctx = build_context(info, options, held=HeldNamespaces(7, {}))
    back = context_from_fields(json.loads(json.dumps(ctx.fields())))
    assert back == ctx
    assert back.json_fragment == ctx.json_fragment


# ------------------------------------------------------------------ pylog ps

def _row(text: str, name: str) -> list[str]:
    for line in text.splitlines()[1:]:
        cells = line.split()
        if len(cells) > 1 and cells[1] == name:
            return cells
    raise AssertionError(f"no row for {name!r} in:\n{text}")


def _cell(text: str, name: str, column: str) -> str:
    return _row(text, name)[3 + NS_COLUMNS.index(column)]


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    i = lines.index(title)
    out = []
    for line in lines[i + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


@pytest.fixture
def ps_text(info):
    options = parse_log_options({})
    reg = NamespaceRegistry()
    ids = {"web": "1" * 64, "sidecar": "2" * 64, "hostnet": "3" * 64, "hostnet2": "4" * 64,
           "pending": "5" * 64, "oldkernel": "6" * 64}
    names = {cid: name for name, cid in ids.items()}
    own = {"cgroup": 0, "ipc": 0, "mnt": 0, "uts": 0, "time": HOST_N["time"],
           "user": HOST_N["user"]}

    def ns(base: int, **over: int) -> dict[str, int]:
        d = {t: (n or base + i) for i, (t, n) in enumerate(own.items())}
        d.setdefault("net", base + 10)
        d.setdefault("pid", base + 11)
        d.update(over)
        return d

    helds = {
        "web": held(100, **ns(300, net=200, pid=201)),
        "sidecar": held(110, **ns(400, net=200, pid=201)),
        "hostnet": held(120, **ns(500, net=HOST_N["net"], pid=HOST_N["pid"], uts=HOST_N["uts"])),
        "hostnet2": held(130, **ns(600, net=HOST_N["net"])),
        "oldkernel": HeldNamespaces(140, {t: ident(t, 700 + i, with_id=False)
                                          for i, t in enumerate(NS_COLUMNS)}),
    }
    for name, h in helds.items():
        reg.add(ids[name], h)
    containers = []
    for name, cid in ids.items():
        i = dict(info, ContainerID=cid, ContainerName="/" + name)
        ctx = build_context(i, options, held=helds.get(name), host=HOST, registry=reg,
                            names=names)
        containers.append(dict(ctx.fields(), attachments=1))
    return format_ps(containers)


def test_ps_table(ps_text):
    header = ps_text.splitlines()[0]
    assert header.split() == ["CONTAINER", "NAME", "PID", *NS_COLUMNS]
    web = _row(ps_text, "web")
    assert web[0] == "1" * 12 and web[2] == "100"
    # columns line up under their headings
    net_at = header.index(" net ") + 1
    for line in ps_text.splitlines()[1:7]:
        assert line[net_at - 2:net_at] == "  " and line[net_at] != " ", line


def test_ps_shows_host_for_host_namespaces(ps_text):
    for col in ("net", "pid", "uts", "time", "user"):
        assert _cell(ps_text, "hostnet", col) == "host"
    assert _cell(ps_text, "hostnet2", "net") == "host"  # shared with hostnet, but no "*"
    assert _cell(ps_text, "hostnet2", "pid") == str(4026532000 + 611)  # the inode
    assert _cell(ps_text, "web", "time") == "host"


def test_ps_marks_shared_namespaces(ps_text):
    assert _cell(ps_text, "web", "net") == f"{4026532000 + 200}*"
    assert _cell(ps_text, "sidecar", "net") == f"{4026532000 + 200}*"
    assert _cell(ps_text, "sidecar", "pid") == f"{4026532000 + 201}*"
    assert _cell(ps_text, "web", "mnt") == str(4026532000 + 302)  # its own: no mark
    assert not any("*" in c for c in _row(ps_text, "hostnet"))


def test_ps_lists_the_sharing_groups(ps_text):
    boot = host_identity().boot_id
    assert _section(ps_text, "Sharing a namespace (* above):") == [
        f"net {4026532000 + 200} (key {namespace_key(boot, ident('net', 200))}): sidecar, web",
        f"pid {4026532000 + 201} (key {namespace_key(boot, ident('pid', 201))}): sidecar, web",
    ]


def test_ps_lists_the_containers_in_host_namespaces(ps_text):
    assert _section(ps_text, "In the host's namespaces (besides cgroup, time, user):") == [
        "hostnet: net, pid, uts",
        "hostnet2: net",
    ]


def test_ps_not_found_yet_and_no_ns_get_id(ps_text):
    pending = _row(ps_text, "pending")
    assert pending[2] == "-"  # no PID yet
    assert pending[3:] == ["?"] * len(NS_COLUMNS)
    old = _row(ps_text, "oldkernel")
    assert old[3 + NS_COLUMNS.index("mnt")] == str(4026532000 + 700 + NS_COLUMNS.index("mnt"))


def test_ps_without_containers():
    text = format_ps([])
    assert text.splitlines()[0].split() == ["CONTAINER", "NAME", "PID", *NS_COLUMNS]
    assert "(no container is attached)" in text
    assert "Sharing" not in text and "host's namespaces (besides" not in text


def test_ps_of_host_namespaces_listed_with_sharers():
    # Contexts saved before shared_with was left out of host namespaces (context.json of an
    # older pylog) still show "host", unmarked, and make no sharing group of the host's.
    def c(cid: str, name: str) -> dict:
        return {"container": {"id": cid, "name": name}, "process": {"pid": 1},
                "pylog": {"ns": {"net": {"inode": 4026531833, "id": 3, "is_host": True,
                                         "shared_with": ["b" if name == "a" else "a"]}}},
                "attachments": 1}

    text = format_ps([c("1" * 64, "a"), c("2" * 64, "b")])
    assert _cell(text, "a", "net") == "host"
    assert _cell(text, "a", "mnt") == "-"  # a type the context does not have
    assert "Sharing a namespace" not in text
    assert _section(text, "In the host's namespaces (besides cgroup, time, user):") == [
        "a: net", "b: net"]


@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]), _TIMES,
                          st.text(max_size=30).map(str.encode)), max_size=40))
def test_records_of_text_lines_are_the_line_by_line_records(batch):
    """Lines of text (mostly plain: taken as they are; sometimes with a quote, a backslash or a
    control character: escaped) give the same records as record_json."""
    ctx = build_context(json.loads((VECTORS / "requests.jsonl").read_text().splitlines()[2])
                        ["body"]["Info"], parse_log_options({}), host_name="h")
    entries = [LogEntry(source=s, time_nano=t, line=b) for s, t, b in batch]
    assert records(entries, ctx) == [record_json(e, ctx, TimestampFormatter()) for e in entries]


@pytest.mark.parametrize(("texts", "plain"), [
    ([b"GET /healthz 200", b"caf\xc3\xa9 \xe2\x82\xac", b""], True),
    ([b"one", b'say "hi"'], False),
    ([b"one", b"back\\slash"], False),
    ([b"tab\there"], False),
    ([b"bell\x07", b"x"], False),
    ([b"del\x7f is fine in JSON"], True),
    ([b"bad \xff"], False),
    # a UTF-8 sequence cut across two lines is two invalid lines, not one valid character
    ([b"cut \xe2", b"\x82\xac here"], False),
])
def test_plain_text_is_only_lines_json_can_take_as_they_are(texts, plain):
    assert plain_text(texts) is plain
    ctx = build_context(json.loads((VECTORS / "requests.jsonl").read_text().splitlines()[2])
                        ["body"]["Info"], parse_log_options({}), host_name="h")
    entries = [LogEntry(source="stdout", time_nano=BASE, line=t) for t in texts]
    got = [json.loads(r)["message"] for r in records(entries, ctx)]
    assert got == [t.decode("utf-8", "replace") for t in texts]
