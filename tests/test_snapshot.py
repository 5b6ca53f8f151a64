"""Code snapshots: .gitignore and code-omit honoured, deterministic, content-addressed, size limit."""
from __future__ import annotations

import io
import json
import subprocess
import sys
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


SECRETS = [".ssh/id_rsa", ".ssh/config", ".azure/msal_token_cache.json", ".aws/credentials",
           ".gnupg/pubring.kbx", ".kube/config", ".docker/config.json", ".netrc",
           ".git-credentials", ".env", ".env.local", "certs/server.pem", "certs/tls.key",
           "keys/id_rsa.pub", "keys/id_ed25519", "msal_token_cache.bin", "app/my_token_cache.json",
           "xt_config.yaml.bak", "old/xt_config.yaml", ".ipynb_checkpoints/nb-checkpoint.ipynb"]


@pytest.fixture
def fake_home(tmp_path):
    """A home-like tree holding the secrets a real one does, and some code."""
    root = tmp_path / "someone"
    for name in SECRETS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("AccountKey=c2VjcmV0\n")
    (root / "train.py").write_text("print(1)\n")
    (root / ".docker" / "daemon.json").write_text("{}")
    return root


def test_secret_files_are_never_snapshotted(fake_home, tmp_path):
    store = FileStore(str(tmp_path / "fs"))
    snap = snapshot.build(store, ["."], [], str(fake_home))
    with zipfile.ZipFile(io.BytesIO(store.read_bytes(snap.path))) as zf:
        assert sorted(zf.namelist()) == [".docker/daemon.json", "train.py"]
    # the preview says what was left out, and which rule did it
    plan = snapshot.plan(["."], [], str(fake_home))
    why = dict(plan.omitted)
    assert why[".ssh/"] == "may hold a secret: .ssh/"
    assert why["certs/tls.key"] == "may hold a secret: *.key"
    assert why[".ipynb_checkpoints/"] == "always left out: .ipynb_checkpoints/"
    assert why["xt_config.yaml.bak"] == "may hold a secret: xt_config.yaml*"
    text = plan.describe()
    for name in (".ssh/", ".azure/", ".env.local", "keys/id_ed25519", "app/my_token_cache.json"):
        assert f"  {name}  (" in text
    # a `!pattern` in code-omit brings one back on purpose
    names = [n for n, _ in snapshot.collect(["."], ["!tls.key"], str(fake_home))]
    assert "certs/tls.key" in names and "certs/server.pem" not in names


def test_home_directory_is_refused(fake_home, monkeypatch):
    monkeypatch.setenv("HOME", str(fake_home))
    for code_dir, cwd in (("$scriptdir/**", fake_home), (".", fake_home), ("./*", fake_home),
                          ("..", fake_home / ".ssh")):
        with pytest.raises(JobError, match="home directory: refusing") as info:
            snapshot.plan([code_dir], [], str(cwd))
        assert "\n" not in str(info.value) and "code.code-dirs" in str(info.value)
    (fake_home / "proj").mkdir()
    assert snapshot.plan(["."], [], str(fake_home / "proj")).files == []


def test_notebook_checkpoints_do_not_change_the_snapshot(tree, tmp_path):
    store = FileStore(str(tmp_path / "fs"))
    first = snapshot.build(store, ["."], [], str(tree))
    (tree / ".ipynb_checkpoints").mkdir()
    (tree / ".ipynb_checkpoints" / "train-checkpoint.ipynb").write_text('{"cells": []}')
    (tree / "pkg" / ".ipynb_checkpoints").mkdir()
    (tree / "pkg" / ".ipynb_checkpoints" / "model-checkpoint.py").write_text("X = 2\n")
    again = snapshot.build(store, ["."], [], str(tree))
    assert again.sha256 == first.sha256 and again.new_bytes == 0


def test_a_socket_in_the_code_dir_is_left_out(tmp_path, monkeypatch):
    """A kernel started with ipc transport leaves sockets in its directory; reading one fails
    with ENXIO, so a snapshot of that directory must skip it (only regular files are code)."""
    import socket
    from xt_magic.core.jobs import snapshot
    (tmp_path / "train.py").write_text("print(1)\n")
    monkeypatch.chdir(tmp_path)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("kernel-ipc-1")
    try:
        plan = snapshot.plan(["$scriptdir/**"], [], str(tmp_path))
    finally:
        sock.close()
    assert [name for name, _ in plan.files] == ["train.py"]


PLAN = r"""
import json, sys
from xt_magic.core.jobs import snapshot
p = snapshot.plan(["$scriptdir/**"], ["__pycache__", "*.env", "!keep.env"], sys.argv[1])
print(json.dumps([p.files, p.omitted, "pathspec" in sys.modules]))
"""


def test_a_tree_listed_before_is_listed_again_without_pathspec(tree):
    """gitignore decisions are remembered per code dir: a new kernel lists the same tree without
    importing pathspec, with the same files and reasons; an edited .gitignore is honoured."""
    def plan():
        out = subprocess.run([sys.executable, "-c", PLAN, str(tree)], capture_output=True,
                             text=True, check=True)
        files, omitted, loaded = json.loads(out.stdout.strip().splitlines()[-1])
        return [tuple(f) for f in files], {n: why.strip() for n, why in omitted}, loaded

    (tree / "keep.env").write_text("")
    files, omitted, loaded = plan()
    assert loaded and omitted["pkg/local.log"] == "pkg/.gitignore: *.log"
    assert ("keep.env", 0) in files and omitted["secret.env"] == "code.code-omit: *.env"
    assert plan() == (files, omitted, False)
    (tree / "pkg" / ".gitignore").write_text("model.py\n")
    (tree / "new.log").write_text("")  # a new name: only it is matched
    files2, omitted2, loaded = plan()
    assert loaded and omitted2["pkg/model.py"] == "pkg/.gitignore: model.py"
    assert ("pkg/local.log", 5) in files2 and ("new.log", 0) in files2
    assert plan() == (files2, omitted2, False)
