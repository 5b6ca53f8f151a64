"""Client side of %%xt_run and the job verbs, over the file store and a synchronous test backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from xt_magic.core import api, registry
from xt_magic.core.errors import JobError
from xt_magic.core.errors import RunFailed
from xt_magic.core.jobs.results import safe_extract

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sync_local(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "local", ("jobs_support:SyncBackend", ""))
    import jobs_support
    jobs_support.SyncBackend.submitted.clear()
    return jobs_support.SyncBackend


@pytest.fixture
def null_local(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "local", ("jobs_support:NullBackend", ""))
    import jobs_support
    jobs_support.SyncBackend.submitted.clear()
    return jobs_support.NullBackend


def notebook_ns(code: str = "") -> dict:
    """A namespace whose functions/classes are 'notebook-defined' (__module__ == '__main__')."""
    ns = {"__name__": "__main__"}
    exec(code, ns)
    return ns


def store_root(xt_home) -> str:
    return str(xt_home / "file_store")


def test_round_trip_inputs_outputs_and_notebook_functions(sync_local):
    ns = notebook_ns(
        "import math\n"
        "class Scaler:\n"
        "    def __init__(self, k): self.k = k\n"
        "    def __call__(self, x): return x * self.k\n"
        "def square(x):\n    return x * x\n"
        "data = [1, 2, 3]\nscale = Scaler(10)\nunused = object()\n")
    job = api.run_cell("total = sum(scale(square(v)) for v in data)\nroot = math.sqrt(total)\n"
                       "print('total', total)\n", ns, outputs=["total", "root"])
    assert job.id == "job1" and job.runs == ["run1.1"]
    assert job.record.inputs == ["data", "math", "scale", "square"]  # 'unused' not sent
    job.refresh()
    assert job.state("run1.1") == "completed", api.logs("run1.1") or job.info("run1.1")
    into: dict = {}
    res = api.results("job1", into=into)
    assert res["total"] == 140 and into["total"] == 140 and abs(into["root"] - 140 ** 0.5) < 1e-9
    assert "completed" in repr(job) and "job1" in job._repr_html_()


def test_exception_reraised_with_remote_traceback(sync_local):
    source = "def inner():\n    raise ValueError('bad value 42')\n\ninner()\n"
    api.run_cell(source, notebook_ns())
    res = api.results("job1")
    assert res["run1.1"].state == "failed"
    with pytest.raises(RunFailed) as info:
        api.results("job1", raise_errors=True)
    err = info.value
    assert err.remote_type == "ValueError" and "bad value 42" in str(err)
    assert "inner()" in err.remote_traceback and "line 2" in err.remote_traceback
    assert any("Remote traceback" in line for line in err._render_traceback_())


def test_unpicklable_input_named(sync_local, tmp_path):
    import threading
    ns = notebook_ns()
    ns["lock"] = threading.Lock()
    with pytest.raises(JobError, match=r"input variable 'lock' \(lock\) cannot be sent") as info:
        api.run_cell("print(lock)", ns)
    assert "\n" not in str(info.value)
    made = [n for n in os.listdir(tmp_path / "xt_home") if n != "cache"]  # config caches only
    assert made in ([], ["file_store"])
    assert not sync_local.submitted


@pytest.mark.parametrize("kwargs, msg", [
    ({"hp": {"lr": []}}, r"^hp\['lr'\]: bad value \[\]: empty list"),
    ({"hp": {"1x": [1]}}, r"^hp\['1x'\]: bad hyperparameter name"),
    ({"hp": {"wd": "$loguniform(0, 1)"}}, r"^hp\['wd'\]: .*bounds must be > 0"),
    ({"hp": {"wd": "$loguniform(1e-5"}}, r"^hp\['wd'\]: .*not a \$distribution"),
    ({"hp": ["lr=[0.1]"]}, "^hp must be a dict"),
    ({"max_seconds": 0}, "^max_seconds must be >= 1"),
    ({"runs": 0}, "^runs must be >= 1"),
    ({"search": "random", "hp": {"lr": [1, 2]}}, "^random search needs runs=N"),
    ({"outputs": "y"}, "^outputs must be a list of variable names"),
    ({"outputs": ["not-a-name"]}, "bad output name"),
    ({"inputs": ["class"]}, "bad input name"),
    ({"inputs": ["nope"]}, "not defined"),
    ({"env": {"A B": "1"}}, "bad environment variable name"),
])
def test_bad_options_are_one_line_errors(sync_local, kwargs, msg):
    with pytest.raises(JobError, match=msg) as info:
        api.run_cell("x = 1", notebook_ns(), **kwargs)
    assert "\n" not in str(info.value)


def test_syntax_error_and_magic_lines(sync_local):
    with pytest.raises(JobError, match="cell line 2") as info:
        api.run_cell("x = 1\n!ls\n", notebook_ns())
    assert "%magic lines run only through %%xt_run" in str(info.value)


def test_sweep_runs_get_hparams(sync_local):
    job = api.run_cell("import xt_magic\nresult = lr * layers\nxt_magic.log(step=1, acc=result)\n",
                       notebook_ns(), hp={"lr": [0.1, 0.2], "layers": [2, 4, 8]}, outputs=["result"])
    assert len(job.runs) == 6 and job.record.search == "grid"
    res = job.results()
    assert [r["result"] for r in res] == pytest.approx([0.2, 0.4, 0.8, 0.4, 0.8, 1.6])
    df = api.metrics("job1")
    assert len(df) == 6 and set(df.columns) >= {"run", "step", "acc", "hp.lr", "hp.layers"}
    fig = api.plot("job1", "acc")
    assert len(fig.axes[0].lines) == 6
    with pytest.raises(JobError, match="no metric 'loss'"):
        api.plot("job1", "loss")


def test_ticket_matches_contract(null_local, xt_home):
    job = api.run_cell("y = x + 1", notebook_ns("x = 1"), outputs=["y"], env={"MODE": "fast"},
                       hp={"lr": [0.5]}, max_seconds=30)
    root = store_root(xt_home)
    with open(os.path.join(root, "ws1/runs/run1.1/ticket.json")) as fh:
        ticket = json.load(fh)
    assert "io" not in ticket and ticket["version"] == 2
    assert set(ticket) == {"version", "job", "run", "workspace", "bundle", "paths", "hparams",
                           "outputs", "env", "setup", "python", "workdir", "max_seconds", "sig",
                           # XT's run features (docs/architecture.md "Runner ticket")
                           "experiment", "checkpoint", "resume", "after", "capture", "kind"}
    assert ticket["capture"] == {"max_bytes": 20 * 2 ** 20} and ticket["kind"] == "cell"
    assert ticket["paths"]["outputs"] == "ws1/runs/run1.1/outputs.jsonl"
    assert ticket["checkpoint"]["write"]["dict_cp.json"] == "ws1/runs/run1.1/checkpoints/dict_cp.json"
    from xt_magic.core.protocol import keys, tickets
    from xt_magic.core.storage import get_store
    from xt_magic.core.session import get_session
    key = keys.job_key(get_store(get_session()), "ws1", "job1")
    assert tickets.verify(ticket, key) and not tickets.verify(dict(ticket, env={}), key)
    [launch] = null_local.submitted
    assert launch.launch_secret == {"key": key.hex(), "access": {"kind": "file", "root": root}}
    assert key.hex() not in open(os.path.join(root, "ws1/jobs/job1/job.json")).read()
    assert ticket["bundle"]["inputs"] == "ws1/jobs/job1/bundle/inputs.pkl"
    assert ticket["hparams"] == {"lr": 0.5} and ticket["outputs"] == ["y"]
    assert ticket["env"] == {"MODE": "fast"} and ticket["max_seconds"] == 30
    assert ticket["paths"]["events"] == "ws1/runs/run1.1/events.jsonl"
    for name in ("cell.py", "inputs.pkl", "cloudpickle.zip", "runner.py"):
        assert os.path.isfile(os.path.join(root, "ws1/jobs/job1/bundle", name))
    assert job.state("run1.1") == "queued"
    # a new session (kernel restart) lists and re-attaches
    from xt_magic.core import session
    session.reset_session()
    df = api.jobs()
    assert list(df["job"]) == ["job1"] and df["status"][0] == "queued"
    assert api.job("1").runs == ["run1.1"]
    assert api.status("run1.1")["state"] == "queued"
    api.cancel("job1")
    assert api.status("job1").state("run1.1") == "cancelled"
    assert api.jobs(status="cancelled")["job"].tolist() == ["job1"]
    assert api.jobs(status="running").empty


def test_dry_run_submits_nothing(null_local, xt_home, tmp_path):
    (tmp_path / "work" / "train.py").write_text("print(1)\n")
    preview = api.preview("print(a)", notebook_ns("a = 1"), hp={"k": [1, 2]})
    text = repr(preview)
    assert "2 run(s)" in text and "train.py" in text and "inputs: a" in text
    assert not null_local.submitted and not os.path.exists(xt_home / "file_store" / "ws1")


def test_unchanged_snapshot_stores_no_new_bytes(null_local, xt_home, tmp_path):
    (tmp_path / "work" / "lib.py").write_text("K = 1\n")
    api.run_cell("import lib", notebook_ns())
    snaps = xt_home / "file_store" / "snapshots"
    before = {p.name: p.stat().st_size for p in snaps.iterdir()}
    api.run_cell("import lib", notebook_ns())
    after = {p.name: p.stat().st_size for p in snaps.iterdir()}
    assert before == after and len(after) == 1


def test_unsafe_output_zip_refused(tmp_path):
    import io
    import zipfile
    for name in ("../evil.txt", "/abs.txt", "a/../../b"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(name, "x")
        with pytest.raises(JobError, match="unsafe path"):
            safe_extract(buf.getvalue(), str(tmp_path / "dest"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(JobError, match="unsafe path"):
        safe_extract(buf.getvalue(), str(tmp_path / "dest"))


def test_tampered_outputs_not_loaded(sync_local, xt_home):
    api.run_cell("v = 1", notebook_ns(), outputs=["v"])
    path = xt_home / "file_store" / "ws1/runs/run1.1/outputs/vars.pkl"
    import cloudpickle
    path.write_bytes(cloudpickle.dumps({"v": 2}))
    with pytest.raises(JobError, match="^run1.1: output variables at .* do not match the checksum"):
        api.results("job1")



def test_tampered_large_outputs_not_loaded(sync_local, xt_home, monkeypatch):
    """Outputs past results.SMALL_VARS are streamed to a file and checked there, as before."""
    from xt_magic.core.jobs import results
    monkeypatch.setattr(results, "SMALL_VARS", 0)
    api.run_cell("v = 1", notebook_ns(), outputs=["v"])
    assert api.results("job1")["v"] == 1
    path = xt_home / "file_store" / "ws1/runs/run1.1/outputs/vars.pkl"
    import cloudpickle
    path.write_bytes(cloudpickle.dumps({"v": 2}))
    with pytest.raises(JobError, match="^run1.1: output variables at .* do not match the checksum"):
        api.results("job1")


def test_results_of_a_finished_sweep_read_no_file_twice(sync_local, xt_home, monkeypatch):
    """Job.results() on a handle that saw its runs end reads no events file again, and small
    output variables come straight from the store (the signed ``vars_size``): no temporary copy
    per run."""
    from xt_magic.core.storage.file import FileStore
    job = api.run_cell("y = lr * 2", notebook_ns(), hp={"lr": [1, 2, 3]}, outputs=["y"])
    job.wait(progress=False)
    reads, downloads = [], []
    real_read, real_download = FileStore.read_from, FileStore.download_file
    monkeypatch.setattr(FileStore, "read_from", lambda self, path, offset: (
        reads.append(path), real_read(self, path, offset))[1])
    monkeypatch.setattr(FileStore, "download_file", lambda self, path, local: (
        downloads.append(path), real_download(self, path, local))[1])
    assert [r["y"] for r in job.results()] == [2, 4, 6]
    assert not [p for p in reads if p.endswith("events.jsonl")] and not downloads
    assert all(job.info(r)["final"]["vars_size"] > 0 for r in job.runs)


SUBMITTER = """
import sys
sys.path.insert(0, sys.argv[2])
from xt_magic.core import api, registry
registry.BACKENDS["local"] = ("jobs_support:NullBackend", "")
print(" ".join(api.run_cell("x = 1", {}).id for _ in range(int(sys.argv[1]))))
"""


def test_concurrent_submissions_unique_ids(null_local, xt_home, tmp_path):
    # 4 processes x 50 submissions at once into one store
    procs = [subprocess.Popen([sys.executable, "-c", SUBMITTER, "50", os.path.join(ROOT, "tests")],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    got = [i for out in outs for i in out.split()]
    assert len(got) == 200 and len(set(got)) == 200
    df = api.jobs()
    assert len(df) == 200 and set(df["job"]) == set(got)
    assert (df["runs"] == 1).all()


def test_magic_submits_and_lists(ip, sync_local):
    ip.run_cell("def f(x):\n    return x + 1\nseed = 41")
    job = ip.run_cell_magic("xt_run", "--outputs answer --name demo", "answer = f(seed)")
    assert job.record.name == "demo"
    ip.run_line_magic("xt_results", "job1 --into-namespace")
    assert ip.user_ns["answer"] == 42
    out = ip.run_line_magic("xt_jobs", "--last 5")
    assert list(out["job"]) == ["job1"]


def test_no_sys_exit_in_kernel_on_bad_magic_args(ip, sync_local):
    from xt_magic.core.errors import XTError
    with pytest.raises(XTError):
        ip.run_cell_magic("xt_run", "--runs notanumber", "x = 1")


CANARY = "CANARY-s3cr3t-7f1e9a"


def test_canary_secret_never_in_store_or_bundle(sync_local, xt_home, monkeypatch, tmp_path):
    user_cfg = tmp_path / "user_config.yaml"  # outside XT_HOME, which is scanned below
    monkeypatch.setenv("XT_USER_CONFIG", str(user_cfg))
    user_cfg.write_text(
        "external-services:\n"
        f"  filestorage: {{type: storage, provider: store-file, key: \"{CANARY}-key\"}}\n")
    monkeypatch.setenv("XT_TEST_SECRET_TOKEN", CANARY + "-env")
    (tmp_path / "work" / "code.py").write_text("A = 1\n")
    ns = notebook_ns("def g():\n    return 5\nx = 2\n")
    api.run_cell("import code\ny = g() * x\nprint('y', y)\n", ns, outputs=["y"],
                 hp={"lr": [0.1, 0.2]}, env={"MODE": "m"})
    api.run_cell("raise RuntimeError('boom')", ns)
    assert api.results("job1")["run1.1"]["y"] == 10
    found = []
    for folder, _, files in os.walk(xt_home):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                data = fh.read()
            if CANARY.encode() in data:
                found.append(os.path.join(folder, name))
    assert not found
    assert os.path.isdir(xt_home / "file_store" / "ws1" / "jobs" / "job2" / "bundle")


def test_preview_line_magic_and_dry_run_cell(ip, null_local, tmp_path):
    (tmp_path / "work" / "model.py").write_text("W = 1\n")
    preview = ip.run_line_magic("xt_run", "--preview")
    assert "model.py" in repr(preview) and "1 run(s)" in repr(preview)
    ip.run_cell("base = 3")
    preview = ip.run_cell_magic("xt_run", "--dry-run --hp k=[1,2,3] --repeat 2", "y = base * k")
    assert "6 run(s)" in repr(preview) and "inputs: base" in repr(preview)
    assert not null_local.submitted


def test_local_module_functions_go_by_value_without_snapshot(sync_local, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "helpers_xt_test.py").write_text("def triple(v):\n    return 3 * v\n")
    monkeypatch.syspath_prepend(str(work))
    import helpers_xt_test
    from xt_magic.core import session
    session.get_session().values["code.code-upload"] = False  # node cannot import helpers
    job = api.run_cell("y = triple(5)", {"triple": helpers_xt_test.triple}, outputs=["y"])
    assert job.record.snapshot is None
    assert api.results(job.id)["y"] == 15


def test_missing_result_variable_says_why(sync_local):
    api.run_cell("import nope_not_a_module\ny = 1", {}, outputs=["y"])
    with pytest.raises(RunFailed, match="ModuleNotFoundError"):
        api.results("job1")["y"]
    api.run_cell("y = 1", {}, outputs=["y"])
    with pytest.raises(JobError, match="no output variable 'z'"):
        api.results("job2")["z"]
