"""End to end on the real local target: %%xt_run -> LocalBackend -> runner -> results/verbs."""
from __future__ import annotations

import os
import signal

import pytest

from runner_helpers import events_reads, wait_for as until
from xt_magic.core import api, session
from xt_magic.core.errors import JobError
from xt_magic.core.errors import RunFailed
from xt_magic.core.jobs import results as service


def test_magic_round_trip_with_wait(ip):
    ip.run_cell("import math\n"
                "def area(r):\n    return math.pi * r * r\n"
                "class Box:\n    def __init__(self, v): self.v = v\n"
                "radius = 2\nbox = Box(3)\n")
    res = ip.run_cell_magic("xt_run", "--outputs a,b,box2 --wait",
                            "import os\na = area(radius)\nb = box.v * 2\nbox2 = Box(b)\n"
                            "open(os.path.join(os.environ['XT_OUTPUT_DIR'], 'note.txt'), 'w')"
                            ".write('hi')\nprint('done', a)\n")
    assert isinstance(res, service.Results)
    run = res["run1.1"]
    assert run.state == "completed" and abs(res["a"] - 4 * 3.141592653589793) < 1e-9
    assert res["b"] == 6 and res["box2"].v == 6
    assert open(os.path.join(run.files_dir, "note.txt")).read() == "hi"
    assert ip.user_ns["b"] == 6 and ip.user_ns["box2"].v == 6  # --wait --outputs fills the namespace
    ip.user_ns["b"] = None
    ip.run_line_magic("xt_results", "job1 --into-namespace")
    assert ip.user_ns["b"] == 6


def test_exception_reraised_from_local_run():
    job = api.run_cell("x = 1\nraise KeyError('missing-key')\n", {"__name__": "__main__"})
    job.wait(timeout=60, progress=False)
    assert job.state("run1.1") == "failed"
    with pytest.raises(RunFailed) as info:
        job.results(raise_errors=True)
    assert info.value.remote_type == "KeyError" and "line 2" in info.value.remote_traceback
    rendered = "\n".join(info.value._render_traceback_())
    assert rendered.count("Remote traceback") == 1 and "missing-key" in rendered


def test_cancel_and_kernel_restart(capsys):
    ns = {"__name__": "__main__"}
    api.run_cell("import time\nprint('started', flush=True)\ntime.sleep(120)\n", ns)
    quick = api.run_cell("v = 41 + 1\n", ns, outputs=["v"])
    until(lambda: "started" in _console("run1.1"), what="run1.1 printing")
    job = api.cancel("job1")
    assert job.state("run1.1") == "cancelled"
    quick.wait(timeout=60, progress=False)
    # a new kernel: nothing in memory, everything from the store
    session.reset_session()
    df = api.jobs()
    assert list(df["job"]) == ["job1", "job2"]
    assert list(df["status"]) == ["cancelled", "completed"]
    assert api.results("job2")["v"] == 42
    api.logs("run1.1")
    assert "started" in capsys.readouterr().out


def _console(run: str) -> str:
    import io
    buf = io.StringIO()
    api.logs(run, out=buf)
    return buf.getvalue()


def test_kill_9_is_failed_with_signal():
    api.run_cell("import time\ntime.sleep(120)\n", {"__name__": "__main__"})
    info = until(lambda: (lambda s: s if s["state"] == "running" and s.get("pid") else None)(
        api.status("run1.1")), what="running with pid")
    os.kill(info["pid"], signal.SIGKILL)
    final = until(lambda: (lambda s: s if s["state"] == "failed" else None)(api.status("run1.1")),
                  what="failed")
    assert "SIGKILL" in str(final.get("reason")) or "signal" in str(final.get("reason")).lower()


def test_sweep_of_six_with_metrics_and_follow(capsys):
    job = api.run_cell("import xt_magic\nfor step in range(3):\n"
                       "    xt_magic.log(step=step, loss=lr / (step + 1))\nprint('lr', lr)\n",
                       {"__name__": "__main__"}, hp={"lr": [0.1, 0.2, 0.3]}, repeat=2)
    assert len(job.runs) == 6
    api.logs("run1.6", follow=True)
    assert "lr 0.3" in capsys.readouterr().out
    job.wait(timeout=120, progress=False)
    assert job.status == "completed"
    df = api.metrics("job1")
    assert len(df) == 18 and sorted(df["hp.lr"].unique()) == [0.1, 0.2, 0.3]
    assert len(api.plot("job1", "loss").axes[0].lines) == 6


def test_bad_names_one_line(ip):
    from xt_magic.core.errors import XTError
    for line in ("--hp 1lr=[1]", "--outputs a-b", "--hp lr=[0.1"):
        with pytest.raises(XTError) as info:
            ip.run_cell_magic("xt_run", line, "x = 1")
        assert "\n" not in str(info.value)
    with pytest.raises(JobError):
        api.status("nonsense")


LEAK_CELL = """\
import os, sys, json, cloudpickle
seen = [getattr(json, "XT_LEAK", None), getattr(cloudpickle, "XT_LEAK", None),
        os.environ.get("XT_LEAK"), "xt_leak_mod" in sys.modules, globals().get("leaked")]
json.XT_LEAK = cloudpickle.XT_LEAK = i
os.environ["XT_LEAK"] = str(i)
sys.modules["xt_leak_mod"] = json
leaked = i
where = cloudpickle.__file__
"""


def test_forked_runs_start_clean(xt_home):
    """Runs are forks of one warm supervisor (cloudpickle imported before the first fork): no
    module global, environment variable or sys.modules entry a run sets reaches the next run."""
    (xt_home / "xt_config.yaml").write_text(
        "compute-targets:\n  local:\n    service: pool\n    boxes: [localhost]\n"
        "    max-runs: 1\n")
    session.reset_session()
    job = api.run_cell(LEAK_CELL, {"__name__": "__main__"}, hp={"i": [1, 2, 3]},
                       outputs=["seen", "where"])
    job.wait(timeout=120, progress=False)
    res = job.results(raise_errors=True)
    assert [r["seen"] for r in res.runs_list] == [[None, None, None, False, None]] * 3
    # the supervisor had cloudpickle imported for them: no run imported the bundle's zip
    assert all(".zip" not in r["where"] for r in res.runs_list)


def test_a_poll_reads_only_the_runs_whose_events_changed(xt_home):
    """Job._read keeps each live run's events and the store's change token of the file: a poll
    reads no events file that did not change, and of one that did, only what was appended."""
    from xt_magic.core.protocol import events
    from xt_magic.core.protocol.layout import Layout
    (xt_home / "xt_config.yaml").write_text(
        "compute-targets:\n  local:\n    service: pool\n    boxes: [localhost]\n"
        "    max-runs: 1\n")
    session.reset_session()
    job = api.run_cell("import time\ntime.sleep(120)\n", {"__name__": "__main__"},
                       hp={"i": list(range(12))})
    try:
        until(lambda: job._read() or job.state(job.runs[0]) == "running", what="run 1 running")
        with events_reads() as reads:
            job._read()
            assert reads == []  # 12 live runs, none changed: nothing read
            lay = Layout(job.record.workspace)
            path = lay.events(job.runs[5])
            size = os.path.getsize(job._ctx().store.local_path(path))
            events.append(job._ctx().store, path, events.FAILED, reason="by the test")
            job._read()
            assert reads == [(path, size)]  # that run only, from where the last read stopped
        assert job.state(job.runs[5]) == "failed"
    finally:
        job.cancel()


def test_undefined_free_names_are_warned_at_submit_and_the_job_still_goes(ip, capsys):
    ip.run_cell("known = 3\n")
    job = ip.run_cell_magic("xt_run", "--hp lr=[0.1]",
                            "print(known, lr, len([]))\nprint(data_that_does_not_exist)\n")
    line = [ln for ln in capsys.readouterr().out.splitlines() if "[xt] warning" in ln]
    assert len(line) == 1 and "data_that_does_not_exist" in line[0]
    assert "known" not in line[0] and "lr" not in line[0] and "len" not in line[0]
    assert job.wait(timeout=60, progress=False).state(job.runs[0]) == "failed"
    api.run_cell("y = 1\n", {})  # a cell with every name defined: no warning
    assert "[xt] warning" not in capsys.readouterr().out


def test_a_submit_reads_each_runs_events_once(xt_home):
    """The Job handle run_cell returns reads each run's events once; the end watcher's handle
    is its twin (what it read, no second read of every run: 50 more requests on a blob store)."""
    from xt_magic.core.jobs import notify
    lines = []
    notify.set_announcer(lambda job: lines.append)  # a front end that shows the end line
    try:
        with events_reads() as reads:
            job = api.run_cell("v = i", {"__name__": "__main__"}, hp={"i": list(range(5))})
        paths = [path for path, _ in reads]
        assert len(paths) == len(set(paths)) == 5
        job.wait(timeout=60, progress=False)
        until(lambda: lines, what="the watcher's end line")
    finally:
        notify.set_announcer(None)
    assert lines[0].startswith(f"[xt] {job.id} ended: completed")
