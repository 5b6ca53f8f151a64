"""Batch backend pieces that need no service: command-line quoting, ids, node counts, OutputFile
destinations from per-blob SAS URLs."""
from __future__ import annotations

import shlex

import pytest

from runner_helpers import DictConfig as _Cfg
from xt_magic.core.compute import batch



class _Store:
    remote = True

    def describe(self):
        return "azure-blob acct/cont"


def backend(**target):
    cfg = _Cfg({"external-services": {"b": {"type": "batch",
                                            "url": "https://acct.westus.batch.azure.com"}}})
    return batch.BatchBackend("t", dict({"service": "b"}, **target), config=cfg, store=_Store())


def test_command_line_is_quoted_for_the_shell():
    hostile = "py thon'; rm -rf / #"
    cmd = backend(python=hostile)._command("ticket.json")
    argv = shlex.split(cmd)
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3
    inner = shlex.split(argv[2])
    assert inner[0].startswith("XT_HOME=") and inner[1] == "exec"
    from xt_magic.runner import runner as node
    import hashlib
    from xt_magic.core.compute.staging import runner_sha
    sha = runner_sha()
    with open(node.__file__, "rb") as fh:  # the runner this kernel imports and ships
        assert sha == hashlib.sha256(fh.read()).hexdigest()
    assert inner[2:] == [hostile, "-c", node.NODE_BOOTSTRAP, sha, "runner.py", "ticket.json"]
    setup = shlex.split(shlex.split(backend()._command("ticket.json", setup_only=True))[2])
    assert setup[2:] == ["python3", "-c", node.NODE_BOOTSTRAP, sha, "runner.py", "--setup-only",
                         "ticket.json"]


def test_the_node_bootstrap_refuses_another_runner_and_caches_ours(tmp_path):
    """A runner.py that is not the one submitted (changed in the store) never runs; ours is run
    from a copy under the node's XT_HOME, so its bytecode is compiled once per node."""
    import hashlib
    import subprocess
    import sys
    from xt_magic.runner import runner as node
    task = tmp_path / "task"
    task.mkdir()
    (task / "runner.py").write_bytes(open(node.__file__, "rb").read())
    env = {"XT_HOME": str(tmp_path / "node_home"), "PATH": "/usr/bin:/bin"}
    sha = hashlib.sha256((task / "runner.py").read_bytes()).hexdigest()
    ran = subprocess.run(node.node_command(sys.executable, sha, "runner.py", "ticket.json"),
                         cwd=task, env=env, capture_output=True, text=True)
    copy = tmp_path / "node_home" / "runner" / sha[:32] / "runner.py"
    assert copy.read_bytes() == (task / "runner.py").read_bytes()
    assert "no launch secret" in ran.stderr  # the runner itself ran (and found no secret)
    # its bytecode was written for the copy's name and mtime: the next task does not compile it
    import importlib.util
    import struct
    pyc = importlib.util.cache_from_source(str(copy))
    with open(pyc, "rb") as fh:
        header = fh.read(16)
    assert struct.unpack("<4xIII", header)[1:] == (int(copy.stat().st_mtime),
                                                   copy.stat().st_size & 0xFFFFFFFF)
    (task / "runner.py").write_text("open('pwned', 'w').write('x')\n")
    bad = subprocess.run(node.node_command(sys.executable, sha, "runner.py", "ticket.json"),
                         cwd=task, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stderr
    assert not (task / "pwned").exists()


def test_the_first_tasks_on_a_node_start_together_and_share_one_copy(tmp_path):
    """A node's first wave of tasks all find no copy: one writes and compiles it (under a lock),
    every task runs it from that bytecode (none compiles it again), nothing half-written is left."""
    import hashlib
    import subprocess
    import sys
    from xt_magic.runner import runner as node
    task = tmp_path / "task"
    task.mkdir()
    (task / "runner.py").write_bytes(open(node.__file__, "rb").read())
    sha = hashlib.sha256((task / "runner.py").read_bytes()).hexdigest()
    env = {"XT_HOME": str(tmp_path / "node_home"), "PATH": "/usr/bin:/bin",
           "PYTHONVERBOSE": "1"}  # import says where each module's code comes from
    procs = [subprocess.Popen(node.node_command(sys.executable, sha, "runner.py", "ticket.json"),
                              cwd=task, env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    errs = [p.communicate(timeout=60)[1] for p in procs]
    # each runner itself ran (and found no launch secret, as none was given)
    assert all("no launch secret" in err for err in errs), errs
    folder = tmp_path / "node_home" / "runner" / sha[:32]
    pyc = f"{folder}/__pycache__/runner.cpython-{sys.version_info[0]}{sys.version_info[1]}"
    assert all(f"# code object from '{pyc}" in err for err in errs), \
        [line for err in errs for line in err.splitlines() if "runner" in line and "#" in line]
    assert sorted(p.name for p in folder.iterdir()) == ["__pycache__", "runner.py",
                                                        "runner.py.lock"]


def test_ids_and_account():
    b = backend()
    assert b.account == "acct"
    assert batch.task_id("run3.12") == "run3-12"
    jid = batch.batch_job_id("my ws!", "job3", _Store())
    assert jid.startswith("xt-my-ws--job3-") and len(jid) <= 64
    assert batch.batch_job_id("ws", "job3", _Store()) != batch.batch_job_id("ws", "job3", None)


@pytest.mark.parametrize("target,counts", [
    ({"nodes": 3}, (3, 0)), ({"nodes": 3, "low-pri": True}, (0, 3)),
    ({"nodes": 4, "low-pri": 1}, (3, 1)), ({"nodes": 4, "low-pri": 2, "dedicated": 1}, (1, 2)),
])
def test_node_counts(target, counts):
    assert backend(**target).node_counts() == counts


def test_output_destination_is_the_one_blob_sas():
    url, blob = batch._container_destination(
        "http://127.0.0.1:10000/devstoreaccount1/c1/ws1/runs/run1.1/node/stdout.txt?sp=cw&sr=b")
    assert url == "http://127.0.0.1:10000/devstoreaccount1/c1?sp=cw&sr=b"
    assert blob == "ws1/runs/run1.1/node/stdout.txt"
    url, blob = batch._container_destination(
        "https://acct.blob.core.windows.net/c1/ws1/a%20b.txt?sig=x")
    assert (url, blob) == ("https://acct.blob.core.windows.net/c1?sig=x", "ws1/a b.txt")


def test_file_store_and_missing_url_are_config_errors():
    from xt_magic.core.errors import ConfigError

    class FileStore(_Store):
        remote = False

    with pytest.raises(ConfigError, match="file store"):
        batch.BatchBackend("t", {"service": "b"}, config=_Cfg({"external-services": {
            "b": {"url": "https://x"}}}), store=FileStore())
    with pytest.raises(ConfigError, match="no url"):
        batch.BatchBackend("t", {"service": "b"}, config=_Cfg({}), store=_Store())
