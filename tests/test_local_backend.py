"""LocalBackend: detached runs, the max-runs box limit across jobs, reconcile, cancel, time limit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from runner_helpers import (ROOT, DictConfig as Cfg, events, launch_for, make_job, read, state,
                            wait_for)
from xt_magic.core.compute.local import LocalBackend, local_root
from xt_magic.core.storage.file import FileStore



def backend(root=None, max_runs=None, cfg=None, **target):
    target = {"service": "pool", "boxes": ["localhost"], **target}
    if max_runs is not None:
        target["max-runs"] = max_runs
    return LocalBackend("local", target, config=cfg or Cfg(),
                        store=FileStore(str(root)) if root is not None else None)


def launches(root, runs, max_seconds=None):
    return [launch_for(root, r, t, max_seconds=max_seconds) for r, _, t in runs]


def states_of(root, runs):
    return [state(root, t)["state"] for _, _, t in runs]


def all_final(root, runs):
    return all(s in ("completed", "failed", "cancelled") for s in states_of(root, runs))


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture(autouse=True)
def kill_leftovers(xt_home):
    """Never leak a supervisor or a sleeping run into other tests."""
    yield
    base = os.path.join(local_root(), "jobs")
    for dirpath, dirs, files in os.walk(base):
        for name in ("pid", "supervisor"):
            if name in files:
                try:
                    pid = int(open(os.path.join(dirpath, name)).read().split()[0])
                    os.killpg(pid, signal.SIGKILL) if name == "pid" else os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError):
                    pass


def max_overlap(evlists):
    """Most runs simultaneously between their running and final events."""
    points = []
    for evs in evlists:
        start = next(e["ts"] for e in evs if e["state"] == "running")
        end = next(e["ts"] for e in evs if e["state"] in ("completed", "failed"))
        points += [(start, 1), (end, -1)]
    cur = best = 0
    for _, d in sorted(points, key=lambda p: (p[0], p[1])):
        cur += d
        best = max(best, cur)
    return best


def test_trivial_job_completes_with_events(tmp_path):
    root = tmp_path / "store"
    runs = make_job(root, "print('hi from local')\nres = 5\n", outputs=["res"])
    backend(root).submit("job1", launches(root, runs))
    wait_for(lambda: all_final(root, runs), what="completion")
    t = runs[0][2]
    assert [e["state"] for e in events(root, t)] == ["created", "queued", "running", "completed"]
    queued = events(root, t)[1]
    assert queued["backend_id"].startswith("local:") and queued["token"]
    assert "hi from local" in read(root, t["paths"]["console"]).decode()


def test_max_runs_respected_across_jobs(tmp_path):
    root = tmp_path / "store"
    cell = "import time\ntime.sleep(0.4)\n"
    a = make_job(root, cell, job="job1", runs=4)
    b = make_job(root, cell, job="job2", runs=3)
    be = backend(root, max_runs=2)
    be.submit("job1", launches(root, a))
    be.submit("job2", launches(root, b))
    wait_for(lambda: all_final(root, a + b), timeout=60, what="all runs")
    assert states_of(root, a + b) == ["completed"] * 7
    overlap = max_overlap([events(root, t) for _, _, t in a + b])
    assert 1 <= overlap <= 2


def test_max_runs_from_box_config_and_default_cores():
    cfg = Cfg({"boxes": {"local": {"address": "localhost", "max-runs": 3}}})
    assert backend(cfg=cfg, boxes=["local"]).max_runs() == 3
    assert backend().max_runs() == (os.cpu_count() or 1)


SUBMITTER = """
import json, sys
sys.path.insert(0, {tests!r})
from runner_helpers import make_job
from test_local_backend import backend, launches
cell = "import os, time\\nwhile not os.path.exists(FLAG):\\n    time.sleep(0.02)\\n"
runs = make_job({root!r}, cell, runs=3, inputs={{"FLAG": {flag!r}}})
backend({root!r}, max_runs=1).submit("job1", launches({root!r}, runs))
print(json.dumps([t for _, _, t in runs]))
"""


def test_queued_runs_start_after_submitter_exits(tmp_path):
    root = str(tmp_path / "store")
    flag = tmp_path / "flag"
    code = SUBMITTER.format(tests=os.path.join(ROOT, "tests"), root=root, flag=str(flag))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=ROOT)
    tickets = json.loads(out.stdout.strip().splitlines()[-1])
    runs = [(t["run"], None, t) for t in tickets]
    # the submitter has exited; every run waits for the flag, so with max-runs 1 runs 2 and 3
    # can only start after it exists, i.e. after the submitter is gone
    wait_for(lambda: state(root, tickets[0])["state"] == "running", what="first run")
    flag.write_text("go")
    wait_for(lambda: all_final(root, runs), timeout=60, what="all runs")
    assert states_of(root, runs) == ["completed"] * 3
    assert max_overlap([events(root, t) for t in tickets]) == 1
    made = flag.stat().st_mtime
    for t in tickets[1:]:
        assert next(e["ts"] for e in events(root, t) if e["state"] == "running") >= made


def _running_pid(root, t):
    return wait_for(lambda: next((e["pid"] for e in events(root, t) if e["state"] == "running"),
                                 None), what="running event")


def test_kill_minus_9_is_failed_with_signal(tmp_path):
    root = tmp_path / "store"
    runs = make_job(root, "import time\ntime.sleep(60)\n")
    backend(root).submit("job1", launches(root, runs))
    t = runs[0][2]
    os.kill(_running_pid(root, t), signal.SIGKILL)
    wait_for(lambda: all_final(root, runs), what="failed event")
    info = state(root, t)
    assert info["state"] == "failed" and info["reason"] == "killed by SIGKILL"
    assert info["exit_code"] == -9


def test_reconcile_when_supervisor_is_gone_too(tmp_path):
    root = tmp_path / "store"
    runs = make_job(root, "import time\ntime.sleep(60)\n", runs=2)
    backend(root, max_runs=1).submit("job1", launches(root, runs))
    t1, t2 = runs[0][2], runs[1][2]
    pid = _running_pid(root, t1)
    jobdir = os.path.join(local_root(), "jobs", "ws1", "job1")
    sup_pid = int(open(os.path.join(jobdir, "supervisor")).read().split()[0])
    os.kill(sup_pid, signal.SIGKILL)
    wait_for(lambda: not _pid_alive(sup_pid), what="supervisor gone")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _pid_alive(pid), what="run gone")
    fresh = backend(root, max_runs=1)  # as from a brand-new kernel
    fresh.poll("job1", ["run1.1", "run1.2"])
    info = state(root, t1)
    assert info["state"] == "failed" and "process gone" in info["reason"]
    # the never-started run gets a new supervisor
    _running_pid(root, t2)
    fresh.cancel("job1", ["run1.2"])
    assert state(root, t2)["state"] == "cancelled"


CANCEL_CELL = """\
import subprocess, time
child = subprocess.Popen(["sleep", "60"])
open(CHILD_FILE, "w").write(str(child.pid))
time.sleep(60)
"""


def test_cancel_running_and_queued_kills_process_group(tmp_path):
    root = tmp_path / "store"
    child_file = str(tmp_path / "child.pid")
    runs = make_job(root, CANCEL_CELL, runs=3, inputs={"CHILD_FILE": child_file})
    be = backend(root, max_runs=1)
    be.submit("job1", launches(root, runs))
    pid = _running_pid(root, runs[0][2])
    child = int(wait_for(lambda: os.path.exists(child_file) and open(child_file).read(),
                         what="grandchild"))
    backend(root, max_runs=1).cancel("job1", [])
    assert states_of(root, runs) == ["cancelled"] * 3
    wait_for(lambda: not _pid_alive(pid) and not _pid_alive(child), what="group killed")
    for _, _, t in runs[1:]:
        assert "running" not in [e["state"] for e in events(root, t)]
    be.poll("job1", [])
    assert states_of(root, runs) == ["cancelled"] * 3


def test_time_limit(tmp_path):
    root = tmp_path / "store"
    runs = make_job(root, "import time\nprint('start', flush=True)\ntime.sleep(60)\n")
    backend(root).submit("job1", launches(root, runs, max_seconds=1))
    wait_for(lambda: all_final(root, runs), what="time limit")
    info = state(root, runs[0][2])
    assert info["state"] == "failed" and info["reason"] == "time limit"


def test_runner_crash_before_reporting_is_failed(tmp_path):
    root = tmp_path / "store"
    runs = make_job(root, "print(1)\n")
    t = runs[0][2]
    with open(runs[0][1], "w") as fh:
        fh.write("{not json")  # the runner cannot even read its ticket: exits 2, unreported
    be = backend(root)
    be.submit("job1", launches(root, runs))
    wait_for(lambda: all_final(root, runs), what="failed")
    info = state(root, t)
    assert info["state"] == "failed" and "exit code 2" in info["reason"]


def test_run_with_another_python_is_spawned(tmp_path):
    base = getattr(sys, "_base_executable", None)
    from conftest import need
    need(bool(base) and os.path.abspath(base) != os.path.abspath(sys.executable),
         "a second interpreter (run the tests from a venv)")
    root = tmp_path / "store"
    cell = "import sys, xt_magic\nprint('exe', sys.executable)\nxt_magic.log(step=0, v=1)\n"
    runs = make_job(root, cell, setup={"name": "other", "hash": "o" * 16, "python": base})
    backend(root).submit("job1", launches(root, runs))
    wait_for(lambda: all_final(root, runs), what="completion")
    t = runs[0][2]
    assert state(root, t)["state"] == "completed", read(root, t["paths"]["console"])
    assert f"exe {base}" in read(root, t["paths"]["console"]).decode()


def test_stale_local_state_from_an_earlier_store_is_replaced(tmp_path):
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    old = make_job(old_root, "x = 1\n")
    backend(old_root).submit("job1", launches(old_root, old))
    wait_for(lambda: all_final(old_root, old), what="first store's job")
    wait_for(lambda: not LocalBackend._supervisor_alive(
        os.path.join(local_root(), "jobs", "ws1", "job1")), what="supervisor exit")
    new = make_job(new_root, "x = 2\n")  # a new store: ids start again at job1
    be = backend(new_root)
    be.submit("job1", launches(new_root, new))
    wait_for(lambda: all_final(new_root, new), what="second store's job")
    assert states_of(new_root, new) == ["completed"]
    be.poll("job1", [])  # the old store's run is not this job dir's to judge
    assert [e["state"] for e in events(old_root, old[0][2])][-1] == "completed"


def test_hard_exit_reports_exit_code(tmp_path):
    root = tmp_path / "store"
    runs = make_job(root, "import os\nos._exit(7)\n")
    backend(root).submit("job1", launches(root, runs))
    wait_for(lambda: all_final(root, runs), what="failed event")
    info = state(root, runs[0][2])
    assert info["state"] == "failed" and info["exit_code"] == 7
    assert info["reason"] == "exited with code 7 without reporting a result"


def test_runs_never_load_the_runner_from_a_tree_being_rewritten(tmp_path, monkeypatch):
    """run17.271: an editor save truncates runner.py; a run started then read an empty file and
    exited 0 with no event. Jobs run a verified copy taken at submit, never the live tree file."""
    import xt_magic.core.compute.staging as staging
    tree = tmp_path / "tree" / "runner.py"
    tree.parent.mkdir()
    tree.write_bytes(open(staging.RUNNER, "rb").read())
    monkeypatch.setattr(staging, "RUNNER", str(tree))
    spawn = LocalBackend._start_supervisor

    def truncate_then_spawn(self, jobdir, lock_fd=None):  # the save's truncate lands first
        tree.write_bytes(b"")
        return spawn(self, jobdir, lock_fd)

    monkeypatch.setattr(LocalBackend, "_start_supervisor", truncate_then_spawn)
    root = tmp_path / "store"
    runs = make_job(root, "print('ran')\n", runs=2)
    backend(root, max_runs=1).submit("job1", launches(root, runs))
    wait_for(lambda: all_final(root, runs), what="completion")
    assert states_of(root, runs) == ["completed", "completed"]
    assert "ran" in read(root, runs[0][2]["paths"]["console"]).decode()


def test_supervisor_wakes_waiters_as_runs_end(tmp_path):
    """A kernel waiting on a job blocks in select() on its FIFO and is woken by the supervisor
    when a run ends (the run's final event is in the store by then); a FIFO whose waiter is gone
    is removed rather than written."""
    from xt_magic.core.compute import local_supervisor as sup
    root = tmp_path / "store"
    be = backend(root)
    flag = tmp_path / "go"
    gate = make_job(root, f"import os, time\nwhile not os.path.exists({str(flag)!r}):\n"
                          "    time.sleep(0.01)\n", job="job2")
    be.submit("job2", launches(root, gate))
    jobdir = be._jobdir("job2")
    waiter = be.waiter("job2")
    dead = os.path.join(jobdir, "waiters", "1-dead")
    os.mkfifo(dead)  # a FIFO nobody holds open: a kernel that died waiting
    try:
        assert waiter.wait(0.0) is False  # nothing ended yet
        flag.write_text("")
        assert waiter.wait(120) is True  # woken, not timed out
        assert all_final(root, gate)
        wait_for(lambda: not os.path.exists(dead), what="the dead waiter's FIFO removed")
    finally:
        waiter.close()
    assert os.listdir(os.path.join(jobdir, "waiters")) == []
    assert backend(root).waiter("job-none") is None
    sup.notify(str(tmp_path / "no-such-jobdir"))  # nothing to wake: no error
