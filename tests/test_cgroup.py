"""Finding a container's processes through its cgroup (pylog.cgroup).

The ``/proc/<pid>/cgroup`` texts below are what the kernel shows for each cgroup driver and
version; the first one was read on this machine (cgroup v1, cgroupfs driver) from a running
``docker run -d pylog-busybox:test sleep 30``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylog.cgroup import container_id_from_cgroup, procs_files, read_procs, scan_proc

CID = "ee60497144be8bdb9771ba15ecf050a4e7ff3ec7d3fbe9727c450c8d4ba83620"
OUTER = "0123456789abcdef" * 4
INNER = "fedcba9876543210" * 4
OTHER = "5" * 64

# Recorded on this machine: cgroup v1, dockerd --exec-opt native.cgroupdriver=cgroupfs.
V1_CGROUPFS = f"""\
9:name=systemd:/docker/{CID}
8:pids:/docker/{CID}
7:blkio:/docker/{CID}
6:freezer:/docker/{CID}
5:devices:/docker/{CID}
4:memory:/docker/{CID}
3:cpuset:/docker/{CID}
2:cpuacct:/docker/{CID}
1:cpu:/docker/{CID}
0::/docker/{CID}
"""

V1_SYSTEMD = f"""\
12:hugetlb:/system.slice/docker-{CID}.scope
11:pids:/system.slice/docker-{CID}.scope
10:blkio:/system.slice/docker-{CID}.scope
9:memory:/system.slice/docker-{CID}.scope
8:cpu,cpuacct:/system.slice/docker-{CID}.scope
7:devices:/system.slice/docker-{CID}.scope
6:net_cls,net_prio:/system.slice/docker-{CID}.scope
5:freezer:/system.slice/docker-{CID}.scope
4:perf_event:/system.slice/docker-{CID}.scope
3:rdma:/
2:cpuset:/system.slice/docker-{CID}.scope
1:name=systemd:/system.slice/docker-{CID}.scope
0::/system.slice/docker-{CID}.scope
"""

V2_CGROUPFS = f"0::/docker/{CID}\n"
V2_SYSTEMD = f"0::/system.slice/docker-{CID}.scope\n"
# A container running systemd under the systemd driver: its init sits one level deeper.
V2_SYSTEMD_INIT_SCOPE = f"0::/system.slice/docker-{CID}.scope/init.scope\n"


@pytest.mark.parametrize("text", [V1_CGROUPFS, V1_SYSTEMD, V2_CGROUPFS, V2_SYSTEMD,
                                  V2_SYSTEMD_INIT_SCOPE],
                         ids=["v1-cgroupfs", "v1-systemd", "v2-cgroupfs", "v2-systemd",
                              "v2-systemd-init.scope"])
def test_container_id_for_every_driver_and_version(text):
    assert container_id_from_cgroup(text) == CID


@pytest.mark.parametrize("text", [
    f"0::/docker/{OUTER}/docker/{INNER}\n",
    "".join(f"{n}:{c}:/docker/{OUTER}/docker/{INNER}\n"
            for n, c in [(3, "pids"), (2, "memory"), (1, "name=systemd"), (0, "")]),
    f"0::/system.slice/docker-{OUTER}.scope/docker/{INNER}\n",
], ids=["v2", "v1", "outer-systemd"])
def test_nested_dockerd_gives_the_inner_container(text):
    assert container_id_from_cgroup(text) == INNER


@pytest.mark.parametrize("text", [
    "0::/init.scope\n",
    "0::/user.slice/user-1000.slice/session-3.scope\n",
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/"
     "vte-spawn-1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901.scope\n"),
    "0::/system.slice/docker.service\n",
    "0::/system.slice/containerd.service\n",
    "0::/\n",
    # this machine's own (host) process: v1, every hierarchy at the root but memory
    ("9:name=systemd:/\n8:pids:/\n4:memory:/process_api/4c9da83614e836e89f92e39e49689305\n"
     "1:cpu:/\n0::/\n"),
], ids=["init.scope", "session", "user-app", "docker.service", "containerd", "root", "this-host"])
def test_host_processes_have_no_container(text):
    assert container_id_from_cgroup(text) is None


@pytest.mark.parametrize("text", [
    "", "\n\n", "garbage", "no colons here\n", ":::::", f"{CID}\n",
    f"0::/docker/{CID[:63]}\n",                       # one digit short
    f"0::/docker/{CID}0\n",                           # one digit too many
    f"0::/docker/{CID.upper()}\n",                    # Docker IDs are lower-case hex
    f"0::/docker/{CID[:-1]}g\n",                      # not hex
    f"0::/docker/x{CID}\n",                           # prefix without the dash
], ids=["empty", "blank-lines", "word", "no-colons", "colons", "bare-id", "short", "long",
        "upper", "non-hex", "glued-prefix"])
def test_garbage_gives_none(text):
    assert container_id_from_cgroup(text) is None


HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(cid=HEX64, layout=st.sampled_from(["/docker/{}", "/system.slice/docker-{}.scope",
                                          "/kubepods/besteffort/pod1/{}",
                                          "/system.slice/cri-containerd-{}.scope"]),
       v1=st.booleans())
def test_any_id_in_any_layout_is_found(cid, layout, v1):
    path = layout.format(cid)
    text = (f"5:pids:{path}\n1:name=systemd:{path}\n0::{path}\n" if v1 else f"0::{path}\n")
    assert container_id_from_cgroup(text) == cid


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="0123456789abcdef"), max_size=300))
def test_text_without_hex_never_names_a_container(text):
    assert container_id_from_cgroup(text) is None



# ------------------------------------------------------------------ cgroup trees in tmp_path

def _v1_root(tmp_path: Path, hierarchies=("pids", "memory", "systemd", "cpu", "cpuacct",
                                           "devices", "unified")) -> Path:
    root = tmp_path / "cgroup"
    for h in hierarchies:
        (root / h).mkdir(parents=True)
        (root / h / "cgroup.procs").write_text("1\n")  # host processes at each root
    return root


def _v2_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.procs").write_text("1\n")
    return root


def _leaf(driver: str, cid: str) -> str:
    return f"docker/{cid}" if driver == "cgroupfs" else f"system.slice/docker-{cid}.scope"


def _put(base: Path, leaf: str, pids: list[int]) -> None:
    d = base / leaf
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_v1_processes_are_found_in_the_hierarchies(tmp_path, driver):
    root = _v1_root(tmp_path)
    # The container's cgroup exists in every hierarchy, as runc makes it.
    for h in ("pids", "memory", "systemd", "cpu", "devices"):
        _put(root / h, _leaf(driver, CID), [4242, 4250])
    _put(root / "pids", _leaf(driver, OTHER), [999])  # another container

    files = procs_files(CID, root)
    assert root / "pids" / _leaf(driver, CID) / "cgroup.procs" in files
    assert all(f.is_relative_to(root) and f.name == "cgroup.procs" for f in files)
    assert not any(OTHER in str(f) for f in files)
    assert read_procs(files) == [4242, 4250]
    assert read_procs(procs_files(OTHER, root)) == [999]
    assert read_procs(procs_files("6" * 64, root)) == []


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_v1_with_only_some_hierarchies_mounted(tmp_path, driver):
    # Only the systemd (name=systemd) hierarchy holds the container: it is still found.
    root = _v1_root(tmp_path, hierarchies=("systemd",))
    _put(root / "systemd", _leaf(driver, CID), [77])
    files = procs_files(CID, root)
    assert all(f.is_relative_to(root / "systemd") for f in files)
    assert read_procs(files) == [77]


def test_v1_skips_an_empty_hierarchy_and_reads_the_next(tmp_path):
    # A hierarchy where the process has not been placed yet shows an empty cgroup.procs.
    root = _v1_root(tmp_path)
    _put(root / "pids", _leaf("cgroupfs", CID), [])
    _put(root / "memory", _leaf("cgroupfs", CID), [31337])
    assert read_procs(procs_files(CID, root)) == [31337]


def test_v1_hybrid_unified_hierarchy_is_looked_at(tmp_path):
    root = _v1_root(tmp_path, hierarchies=("unified",))
    _put(root / "unified", _leaf("systemd", CID), [5150])
    assert read_procs(procs_files(CID, root)) == [5150]


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_v2_processes_are_found_in_the_unified_tree(tmp_path, driver):
    root = _v2_root(tmp_path)
    _put(root, _leaf(driver, CID), [4242])
    _put(root, _leaf(driver, OTHER), [999])
    files = procs_files(CID, root)
    assert root / _leaf(driver, CID) / "cgroup.procs" in files
    # v2 has one tree: no v1 hierarchy names are looked into.
    assert all(f.parent.parent.parent == root for f in files)
    assert read_procs(files) == [4242]
    assert read_procs(procs_files(OTHER, root)) == [999]


def test_v2_does_not_mistake_a_cgroup_named_like_a_v1_hierarchy(tmp_path):
    # On v2 a directory called "pids" is just some cgroup, not a hierarchy.
    root = _v2_root(tmp_path)
    _put(root / "pids", _leaf("cgroupfs", CID), [1234])
    assert read_procs(procs_files(CID, root)) == []


def test_container_not_created_yet(tmp_path):
    for root in (_v1_root(tmp_path / "v1"), _v2_root(tmp_path / "v2")):
        assert read_procs(procs_files(CID, root)) == []


def test_no_cgroup_filesystem_at_all(tmp_path):
    assert procs_files(CID, tmp_path / "missing") == []
    assert read_procs([]) == []


def test_read_procs_takes_the_first_non_empty_file(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    b.write_text("")
    c.write_text("10\n11\n")
    assert read_procs([a, b, c]) == [10, 11]


# ------------------------------------------------------------------ scanning a fake /proc

def _proc_entry(proc: Path, pid: int | str, cgroup_text: str | None) -> None:
    d = proc / str(pid)
    d.mkdir(parents=True)
    if cgroup_text is not None:
        (d / "cgroup").write_text(cgroup_text)


def test_scan_proc_finds_every_process_of_the_container(tmp_path):
    proc = tmp_path / "proc"
    _proc_entry(proc, 1, "0::/init.scope\n")
    _proc_entry(proc, 100, V1_CGROUPFS)                         # the container's init
    _proc_entry(proc, 101, V1_CGROUPFS)                         # a child of it
    _proc_entry(proc, 102, f"0::/my-parent/{CID}\n")             # custom --cgroup-parent
    _proc_entry(proc, 200, V1_CGROUPFS.replace(CID, OTHER))     # another container
    _proc_entry(proc, 300, f"0::/docker/{CID}/docker/{INNER}\n")  # nested: belongs to INNER
    _proc_entry(proc, 400, None)                                 # exited while scanning
    _proc_entry(proc, "net", V2_CGROUPFS)                        # not a PID
    (proc / "self").symlink_to("100")
    (proc / "cgroups").write_text("#subsys_name\thierarchy\n")

    assert sorted(scan_proc(CID, proc)) == [100, 101, 102]
    assert scan_proc(INNER, proc) == [300]
    assert scan_proc(OTHER, proc) == [200]
    assert scan_proc("6" * 64, proc) == []


def test_scan_proc_of_the_real_proc_does_not_fail():
    # The real /proc has processes that come and go, and unreadable entries.
    assert scan_proc("6" * 64) == []


def test_own_process_is_a_host_process_here():
    # This test runs on the host (no container): its own cgroup names no container.
    text = Path(f"/proc/{os.getpid()}/cgroup").read_text()
    if "docker" in text:
        pytest.skip("the tests run inside a container")
    assert container_id_from_cgroup(text) is None
