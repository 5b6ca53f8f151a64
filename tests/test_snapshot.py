"""Code snapshots: .gitignore and code-omit honoured, deterministic, content-addressed, size limit."""
from __future__ import annotations

import io
import zipfile

import pytest

from xt_magic.core.errors import JobError
from xt_magic.core.jobs import snapshot
from xt_magic.core.storage.file import FileStore


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "data").mkdir()
    (root / ".git").mkdir()
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "model.py").write_text("X = 1\n")
    (root / "pkg" / "__pycache__" / "model.cpython.pyc").write_bytes(b"\0")
    (root / "pkg" / "local.log").write_text("noise")
    (root / "pkg" / ".gitignore").write_text("*.log\n")
    (root / "data" / "big.bin").write_bytes(b"\1" * 5000)
    (root / ".gitignore").write_text("data/\n")
    (root / ".git" / "config").write_text("[core]")
    (root / "secret.env").write_text("K=V")
    return root


def test_gitignore_and_omit_honoured(tree):
    names = [n for n, _ in snapshot.collect(["$scriptdir/**"], ["__pycache__", "*.env"], str(tree))]
    assert names == [".gitignore", "pkg/.gitignore", "pkg/model.py", "train.py"]


def test_non_recursive_dir(tree):
    names = [n for n, _ in snapshot.collect(["./*"], [], str(tree))]
    assert "train.py" in names and not any("/" in n for n in names)


def test_unchanged_snapshot_stores_nothing_new(tree, tmp_path):
    store = FileStore(str(tmp_path / "fs"))
    first = snapshot.build(store, ["."], ["__pycache__"], str(tree))
    assert first.new_bytes > 0 and store.exists(first.path)
    (tree / "train.py").touch()  # mtime change only: same content, same zip
    before = sum(len(store.read_bytes(p)) for p in store.list(""))
    second = snapshot.build(store, ["."], ["__pycache__"], str(tree))
    after = sum(len(store.read_bytes(p)) for p in store.list(""))
    assert second.sha256 == first.sha256 and second.new_bytes == 0 and after == before
    (tree / "train.py").write_text("print('changed')\n")
    third = snapshot.build(store, ["."], ["__pycache__"], str(tree))
    assert third.sha256 != first.sha256 and third.new_bytes > 0
    with zipfile.ZipFile(io.BytesIO(store.read_bytes(third.path))) as zf:
        assert zf.read("train.py") == b"print('changed')\n"


def test_size_limit_names_biggest_files(tree, tmp_path):
    (tree / ".gitignore").write_text("")
    store = FileStore(str(tmp_path / "fs"))
    with pytest.raises(JobError, match=r"over the .* limit; biggest: data/big.bin") as info:
        snapshot.build(store, ["."], [], str(tree), max_bytes=1000)
    assert "\n" not in str(info.value)
    assert list(store.list("snapshots")) == []


def test_plan_lists_files(tree):
    plan = snapshot.plan(["."], ["__pycache__"], str(tree))
    text = plan.describe()
    assert "train.py" in text and "files" in text and plan.total > 0


def test_missing_code_dir(tmp_path):
    with pytest.raises(JobError, match="not a directory"):
        snapshot.collect(["nope/**"], [], str(tmp_path))


def test_store_and_xt_home_never_snapshotted(tree, tmp_path):
    store = FileStore(str(tree / "home" / "file_store"))
    store.write_bytes("snapshots/old.zip", b"z" * 100)
    names = [n for n, _ in snapshot.collect(["."], [], str(tree), skip_dirs=(str(tree / "home"),))]
    assert not any(n.startswith("home/") for n in names) and "train.py" in names
