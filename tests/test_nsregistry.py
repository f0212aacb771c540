"""NamespaceRegistry: who shares which namespace, and keys that never name two namespaces."""

from __future__ import annotations

import os

from pylog.namespaces import HeldNamespaces, NamespaceIdentity, hold_namespaces
from pylog.nsregistry import KEY_CHARS, NamespaceRegistry, SavedKeys, namespace_key
from tests.test_namespaces import assert_closed

BOOT = "0b6f5c0e-1d2a-4c8e-9a41-3f1e2d5c6b7a"
OTHER_BOOT = "7c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"


def _ident(t: str, n: int) -> NamespaceIdentity:
    return NamespaceIdentity(t, inode=4026532000 + n, dev=4, id=8589934000 + n)


def _held(proc_id: int, /, **idents: int) -> HeldNamespaces:
    fd_list = [os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC) for _ in idents]
    return HeldNamespaces(proc_id, {t: _ident(t, n) for t, n in idents.items()}, fd_list)


def test_registry_tracks_who_shares_what():
    reg = NamespaceRegistry()
    web = _held(100, net=1, pid=2, mnt=3)
    sidecar = _held(200, net=1, pid=2, mnt=4)   # --net=container:web --pid=container:web
    other = _held(300, net=5, pid=6, mnt=7)
    third = _held(400, net=1, mnt=8)
    try:
        assert reg.add("web", web) == set()
        assert reg.add("sidecar", sidecar) == {"web"}
        assert reg.add("other", other) == set()
        assert reg.sharing("web", _ident("net", 1)) == ["sidecar"]
        assert reg.sharing("sidecar", _ident("pid", 2)) == ["web"]
        assert reg.sharing("web", _ident("mnt", 3)) == []
        assert reg.sharing("other", _ident("net", 5)) == []
        assert reg.held("sidecar") is sidecar

        assert reg.add("third", third) == {"web", "sidecar"}
        assert reg.sharing("web", _ident("net", 1)) == ["sidecar", "third"]

        fds = list(sidecar.fds)
        assert reg.remove("sidecar") == {"web", "third"}
        assert_closed(fds)
        assert reg.held("sidecar") is None
        assert reg.sharing("web", _ident("net", 1)) == ["third"]
        assert reg.sharing("web", _ident("pid", 2)) == []
        assert reg.remove("sidecar") == set()
        assert reg.remove("never-added") == set()
    finally:
        all_fds = web.fds + other.fds + third.fds
        reg.close()
    assert_closed(all_fds)
    assert reg.held("web") is None


def test_registry_sharing_across_recycled_inodes_uses_the_id():
    reg = NamespaceRegistry()
    a = HeldNamespaces(1, {"net": NamespaceIdentity("net", 4026532184, 4, 11)})
    b = HeldNamespaces(2, {"net": NamespaceIdentity("net", 4026532184, 4, 12)})
    assert reg.add("a", a) == set()
    assert reg.add("b", b) == set()  # same inode, another namespace: not shared
    assert reg.sharing("a", a.identities["net"]) == []


def test_registry_re_add_reports_containers_that_stopped_sharing():
    reg = NamespaceRegistry()
    reg.add("x", HeldNamespaces(1, {"cgroup": _ident("cgroup", 1)}))
    assert reg.add("a", HeldNamespaces(2, {"cgroup": _ident("cgroup", 1)})) == {"x"}
    # a's runc init entered its own cgroup namespace: x no longer shares with a
    touched = reg.add("a", HeldNamespaces(2, {"cgroup": _ident("cgroup", 2)}))
    assert reg.sharing("x", _ident("cgroup", 1)) == []
    assert touched == {"x"}


# ------------------------------------------------------------------ keys

def _noid(t: str, inode: int) -> NamespaceIdentity:
    """As on kernels without NS_GET_ID (Debian 12's 6.1, Debian 13's 6.12)."""
    return NamespaceIdentity(t, inode=inode, dev=4, id=None)


def _fds(n: int) -> list[int]:
    return [os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC) for _ in range(n)]


def test_key_shape_and_what_it_depends_on():
    with_id = NamespaceIdentity("net", 4026532184, 4, 8589934601)
    key = namespace_key(BOOT, with_id)
    assert len(key) == KEY_CHARS and key.isalnum() and key.isascii()
    assert key == namespace_key(BOOT, NamespaceIdentity("net", 1, 9, 8589934601))  # the id decides
    assert key != namespace_key(OTHER_BOOT, with_id)  # another boot or host
    assert key != namespace_key(BOOT, NamespaceIdentity("pid", 4026532184, 4, 8589934601))
    assert namespace_key(BOOT, _noid("net", 7), 1) != namespace_key(BOOT, _noid("net", 7), 2)


def test_without_ns_get_id_a_recycled_inode_gets_a_new_key():
    reg = NamespaceRegistry(boot_id=BOOT)
    reg.add("first", HeldNamespaces(10, {"net": _noid("net", 4026532184)}, _fds(1)))
    first = reg.key_of(_noid("net", 4026532184))
    reg.remove("first")  # its fds close: the kernel may give the inode to the next namespace
    reg.add("second", HeldNamespaces(11, {"net": _noid("net", 4026532184)}, _fds(1)))
    second = reg.key_of(_noid("net", 4026532184))
    assert first != second
    reg.close()


def test_without_ns_get_id_containers_in_one_namespace_share_its_key():
    reg = NamespaceRegistry(boot_id=BOOT)
    reg.add("web", HeldNamespaces(10, {"net": _noid("net", 5), "pid": _noid("pid", 6)}, _fds(2)))
    web_net = reg.key_of(_noid("net", 5))
    # --net=container:web joins while web holds it; web leaving keeps the key for the sidecar
    reg.add("side", HeldNamespaces(11, {"net": _noid("net", 5), "pid": _noid("pid", 8)}, _fds(2)))
    assert reg.key_of(_noid("net", 5)) == web_net
    assert reg.sharing("side", _noid("net", 5)) == ["web"]
    reg.remove("web")
    assert reg.key_of(_noid("net", 5)) == web_net
    reg.close()


def test_a_new_view_of_the_same_container_keeps_the_keys_it_still_holds():
    reg = NamespaceRegistry(boot_id=BOOT)
    reg.add("a", HeldNamespaces(10, {"net": _noid("net", 5), "cgroup": _noid("cgroup", 1)},
                                _fds(2)))
    net = reg.key_of(_noid("net", 5))
    reg.add("a", HeldNamespaces(10, {"net": _noid("net", 5), "cgroup": _noid("cgroup", 2)},
                                _fds(2)))
    assert reg.key_of(_noid("net", 5)) == net
    reg.close()


def test_host_namespaces_and_ids_give_the_same_key_in_every_pylog():
    host = {"net": _noid("net", 4026531840)}
    a, b = NamespaceRegistry(host, BOOT), NamespaceRegistry(host, BOOT)
    a.add("x", HeldNamespaces(10, {"net": _noid("net", 4026531840)}, _fds(1)))  # --net=host
    with_id = NamespaceIdentity("pid", 4026532185, 4, 8589934602)
    b.add("y", HeldNamespaces(11, {"pid": with_id}, _fds(1)))
    assert a.key_of(host["net"]) == b.key_of(host["net"]) == namespace_key(BOOT, host["net"])
    assert a.key_of(with_id) == b.key_of(with_id) == namespace_key(BOOT, with_id)
    a.close()
    b.close()


def test_saved_keys_are_taken_again_only_for_the_same_process_inode_and_boot():
    reg = NamespaceRegistry(boot_id=BOOT)
    saved = SavedKeys(BOOT, 10, {"net": (5, "a" * KEY_CHARS), "pid": (6, "b" * KEY_CHARS)})
    reg.add("c", HeldNamespaces(10, {"net": _noid("net", 5), "pid": _noid("pid", 7)}, _fds(2)),
            saved)
    assert reg.key_of(_noid("net", 5)) == "a" * KEY_CHARS
    assert reg.key_of(_noid("pid", 7)) != "b" * KEY_CHARS  # another inode: another namespace
    reg.close()
    for other in (SavedKeys(OTHER_BOOT, 10, saved.keys), SavedKeys(BOOT, 99, saved.keys)):
        reg = NamespaceRegistry(boot_id=BOOT)
        reg.add("c", HeldNamespaces(10, {"net": _noid("net", 5)}, _fds(1)), other)
        assert reg.key_of(_noid("net", 5)) != "a" * KEY_CHARS
        reg.close()


def test_keys_of_real_namespaces_match_between_two_holders():
    reg = NamespaceRegistry(boot_id=BOOT)
    mine, again = hold_namespaces(os.getpid()), hold_namespaces(os.getpid())
    reg.add("a", mine)
    reg.add("b", again)
    for t, ident in mine.identities.items():
        assert reg.key_of(ident) == reg.key_of(again.identities[t]), t
    fds = mine.fds + again.fds
    reg.close()
    assert_closed(fds)
