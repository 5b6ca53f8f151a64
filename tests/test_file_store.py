"""FileStore: atomic writes, exclusive create, appends, listing, path checks."""
from __future__ import annotations


import pytest

from xt_magic.core.errors import StoreError
from xt_magic.core.storage.file import FileStore


@pytest.fixture
def store(tmp_path):
    return FileStore(str(tmp_path / "fs"))


def test_write_read_replace(store):
    store.write_bytes("ws1/jobs/job1/job.json", b"one")
    store.write_bytes("ws1/jobs/job1/job.json", b"two")
    assert store.read_bytes("ws1/jobs/job1/job.json") == b"two"
    assert store.exists("ws1/jobs/job1/job.json")
    assert not store.exists("ws1/jobs/job2/job.json")
    # no temp files left behind
    assert sorted(store.list("ws1")) == ["ws1/jobs/job1/job.json"]


def test_missing_is_store_error(store):
    with pytest.raises(StoreError, match="not found"):
        store.read_bytes("nope/x")
    assert store.read_from("nope/x", 0) == b""


def test_create_exclusive(store):
    assert store.create_exclusive("ws1/ids/job1", b"") is True
    assert store.create_exclusive("ws1/ids/job1", b"") is False


def test_append_and_read_from(store):
    store.append("r/events.jsonl", b"a\n")
    store.append("r/events.jsonl", b"b\n")
    assert store.read_bytes("r/events.jsonl") == b"a\nb\n"
    assert store.read_from("r/events.jsonl", 2) == b"b\n"


@pytest.mark.parametrize("bad", ["/abs", "../up", "a/../b", "a//b", "a\\b", ""])
def test_bad_paths_rejected(store, bad):
    with pytest.raises(StoreError):
        store.write_bytes(bad, b"x")


def test_delete_and_list(store):
    for p in ("a/1", "a/b/2", "c/3"):
        store.write_bytes(p, b"x")
    assert sorted(store.list("a")) == ["a/1", "a/b/2"]
    assert sorted(store.list("")) == ["a/1", "a/b/2", "c/3"]
    store.delete("a/1")
    store.delete("a/1")  # missing: no error
    assert sorted(store.list("a")) == ["a/b/2"]
    assert list(store.list("zzz")) == []


def test_node_access_and_from_config(tmp_path, xt_home):
    from xt_magic.core.protocol.access import FileAccess, NodeAccess
    store = FileStore.from_config("filestorage", {"type": "storage", "provider": "store-file",
                                                  "path": str(tmp_path / "x")})
    access = store.node_access(read=["a"], write=[], append=[], expiry_seconds=60)
    assert access == FileAccess(str(tmp_path / "x")) and not store.remote
    assert access.to_json() == {"kind": "file", "root": str(tmp_path / "x")}
    assert NodeAccess.from_json(access.to_json()) == access
    assert access.local_path("ws1/a/b") == str(tmp_path / "x" / "ws1" / "a" / "b")
    assert access.merge(FileAccess(str(tmp_path / "x"))) == access
    default = FileStore.from_config("filestorage", {"type": "storage"})
    assert default.root == str(xt_home / "file_store")


APPENDER = """
import os, sys
from xt_magic.core.storage.file import FileStore
store = FileStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.append("r/log", f"{os.getpid()}:{i}:{'x' * 200}\\n".encode())
"""


def test_concurrent_appends_do_not_interleave(tmp_path):
    import subprocess
    import sys
    root = str(tmp_path / "fs")
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, root, "200"]) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    lines = FileStore(root).read_bytes("r/log").decode().splitlines()
    assert len(lines) == 800
    assert all(line.endswith("x" * 200) and line.count(":") == 2 for line in lines)
