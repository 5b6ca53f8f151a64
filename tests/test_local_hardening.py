"""The local target leaves nothing stuck or leaked: runs of an interrupted submit end, no zombie
or duplicate supervisor, a slot frees when its run ends, work dirs are private and removed, a full
disk is named."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from procs import proc_stat, supervisors, zombie_children
from runner_helpers import ROOT, wait_for
from xt_magic.core import api, session
from xt_magic.core.paths import local_root


def _config(xt_home, text):
    (xt_home / "xt_config.yaml").write_text(text)
    session.reset_session()


@pytest.fixture(autouse=True)
def kill_leftovers(xt_home):
    yield
    for pid in supervisors(str(xt_home)):
        os.kill(pid, signal.SIGKILL)


def _jobdir(job):
    return os.path.join(local_root(), "jobs", "ws1", job)


def test_no_zombie_and_one_supervisor_per_job(xt_home):
    ns = {"__name__": "__main__"}
    jobs = []
    for i in range(12):
        job = api.run_cell(f"v = {i}\n", ns)
        job.refresh()  # the first poll right after submit must not start a second supervisor
        assert len(supervisors(_jobdir(job.id))) <= 1
        jobs.append(job)
    for job in jobs:
        job.wait(timeout=60, progress=False)
        assert job.state(job.runs[0]) == "completed"
    wait_for(lambda: not supervisors(str(xt_home)), what="supervisors to exit")
    api.jobs()  # one more look: nothing to reap is left either way
    assert zombie_children() == []
    for job in jobs:  # each job's supervisor started once
        log = open(os.path.join(_jobdir(job.id), "supervisor.log")).read()
        assert log == ""


def test_a_forked_grandchild_does_not_keep_the_slot(xt_home, tmp_path):
    _config(xt_home, "compute-targets:\n  local:\n    max-runs: 1\n")
    marker = tmp_path / "grandchild.pid"
    ns = {"__name__": "__main__"}
    api.run_cell("import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                 f"    open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
                 "    time.sleep(120)\n    os._exit(0)\n", ns)
    wait_for(marker.exists, what="the grandchild")
    grandchild = int(wait_for(lambda: marker.read_text(), what="its pid"))
    try:
        quick = api.run_cell("v = 1\n", ns)
        quick.wait(timeout=30, progress=False)  # not 120 s behind the grandchild
        assert quick.state("run2.1") == "completed"
        assert proc_stat(grandchild) is not None  # still alive: the slot was freed anyway
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_work_dirs_are_private_and_removed_killed_runs_included(xt_home, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    base = tmp_path / "tmp" / f"xt-runs-{os.getuid()}"
    ns = {"__name__": "__main__"}
    job = api.run_cell("import os\nwhere = os.getcwd()\n", ns, outputs=["where"])
    job.wait(timeout=60, progress=False)
    where = api.results(job.id)["where"]
    assert os.path.dirname(where) == str(base)
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    assert not os.path.exists(where)  # removed when the run ended
    other = api.run_cell("import os\nwhere = os.getcwd()\n", ns, outputs=["where"])
    other.wait(timeout=60, progress=False)
    assert api.results(other.id)["where"] != where  # unpredictable, never reused

    stuck = api.run_cell("import os, time\nopen('left.txt', 'w').write('x')\n"
                         "print('ready', flush=True)\ntime.sleep(120)\n", ns)
    wait_for(lambda: os.listdir(base) and "ready" in _console(xt_home, stuck.runs[0]),
             what="the run to start")
    (killed_dir,) = os.listdir(base)
    pid = int(open(os.path.join(_jobdir(stuck.id), "runs", stuck.runs[0], "pid")).read().split()[0])
    os.killpg(pid, signal.SIGKILL)
    stuck.wait(timeout=60, progress=False)
    assert stuck.info(stuck.runs[0])["reason"] == "killed by SIGKILL"
    # the supervisor reaping the killed run removed its work dir
    wait_for(lambda: killed_dir not in os.listdir(base), what="the killed run's work dir to go")
    assert os.listdir(base) == []


def _console(xt_home, run):
    try:
        return (xt_home / "file_store" / "ws1" / "runs" / run / "console.txt").read_text()
    except OSError:
        return ""


KILL_MID_SUBMIT = """
import os, sys
from xt_magic.core import api
from xt_magic.core.compute.local import LocalBackend
LocalBackend.submit = lambda self, job, launches: os.kill(os.getpid(), 9)
api.run_cell("v = 1\\n", {"__name__": "__main__"}, hp={"a": [1, 2, 3]})
"""


def _kernel_killed_mid_submit(xt_home):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", KILL_MID_SUBMIT], env=env, cwd=os.getcwd(),
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def test_runs_of_an_interrupted_submit_fail_after_the_grace(xt_home):
    _config(xt_home, "internal:\n  submit-grace-seconds: 0\n")
    _kernel_killed_mid_submit(xt_home)
    job = api.status("job1")  # the next look from any kernel
    assert [job.state(r) for r in job.runs] == ["failed"] * 3
    assert job.info("run1.1")["reason"].startswith("submit interrupted")
    job.wait(timeout=5, progress=False)  # ends at once
    api.logs("run1.2", follow=True)  # ends too


def test_interrupted_runs_wait_for_the_grace_and_can_be_cancelled(xt_home):
    _kernel_killed_mid_submit(xt_home)  # default grace: 120 s, not over yet
    assert api.status("job1").state("run1.1") == "created"
    job = api.cancel("job1")
    assert [job.state(r) for r in job.runs] == ["cancelled"] * 3


def test_a_run_whose_local_record_is_deleted_fails(xt_home):
    import shutil
    job = api.run_cell("import time\nprint('up', flush=True)\ntime.sleep(120)\n",
                       {"__name__": "__main__"})
    wait_for(lambda: "up" in _console(xt_home, "run1.1"), what="the run to start")
    jobdir = _jobdir(job.id)
    (sup_pid,) = supervisors(jobdir)
    os.kill(sup_pid, signal.SIGKILL)
    pid = int(open(os.path.join(jobdir, "runs", "run1.1", "pid")).read().split()[0])
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: (proc_stat(pid) or [b"X"])[0] in (b"Z", b"X"), what="the run to die")
    shutil.rmtree(jobdir)
    job = api.status(job.id)
    assert job.state("run1.1") == "failed"
    assert "local job record is gone" in job.info("run1.1")["reason"]


def test_a_supervisor_whose_job_record_is_deleted_stops_and_takes_its_runs(xt_home):
    """No supervisor lingers once its job's record is gone (it stops its runs; a poll fails
    them): one left by a deleted record used to live on for hours."""
    import shutil
    job = api.run_cell("import time\nprint('up', flush=True)\ntime.sleep(120)\n",
                       {"__name__": "__main__"})
    wait_for(lambda: "up" in _console(xt_home, "run1.1"), what="the run to start")
    jobdir = _jobdir(job.id)
    (sup_pid,) = supervisors(jobdir)
    pid = int(open(os.path.join(jobdir, "runs", "run1.1", "pid")).read().split()[0])
    shutil.rmtree(jobdir)
    gone = lambda p: (proc_stat(p) or [b"X"])[0] in (b"Z", b"X")  # noqa: E731
    wait_for(lambda: gone(sup_pid) and gone(pid), what="the supervisor and its run to end")
    assert "local job record is gone" in api.status(job.id).info("run1.1")["reason"]


def test_a_full_disk_is_named_not_unknown(xt_home):
    events = xt_home / "file_store" / "ws1" / "runs" / "run1.1" / "events.jsonl"
    # the cell fills "the disk" under its own events: its final event cannot be written
    job = api.run_cell(f"import os\np = {str(events)!r}\nos.rename(p, p + '.real')\n"
                       "os.symlink('/dev/full', p)\n", {"__name__": "__main__"})
    exit_file = os.path.join(_jobdir(job.id), "runs", "run1.1", "exit")
    wait_for(lambda: os.path.exists(exit_file), what="the runner to exit")
    assert open(exit_file).read() == "3"
    events.unlink()  # space again: the supervisor's report goes through
    os.rename(f"{events}.real", events)
    wait_for(lambda: api.status(job.id).state("run1.1") == "failed", what="the report")
    info = api.status(job.id).info("run1.1")
    assert "ENOSPC" in info["reason"], info["reason"]
