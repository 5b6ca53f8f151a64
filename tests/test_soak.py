"""Soak: hundreds of local jobs from one kernel while runners and supervisors are killed -9 and
two kernels die mid-submit. Bounded and loopback only (the local target, the file store).

At the end every run is final with a reason, job ids are unique, the kernel has no zombie child,
no job has more than one supervisor, the private work dirs are empty and the kernel's memory is
flat. XT_SOAK_JOBS scales it (default 300)."""
from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys

from procs import proc_stat, rss_kb, supervisor_jobdirs, supervisors, zombie_children
from runner_helpers import ROOT, wait_for
from xt_magic.core import api, session
from xt_magic.core.paths import local_root

JOBS = int(os.environ.get("XT_SOAK_JOBS", "300"))
GRACE = 2  # internal.submit-grace-seconds: runs of a killed submit fail this long after it

DYING_KERNEL = """
import os, sys
from xt_magic.core import api
print("submitting", flush=True)
api.run_cell("v = 1\\n", {"__name__": "__main__"}, hp={"a": list(range(40))})
"""


def _kill_a_kernel_mid_submit(rng):
    """A kernel submitting a 40-run sweep, SIGKILLed at a random moment of its submit: once a
    random number of its runs have their ``created`` event."""
    ids = os.path.join(os.environ["XT_HOME"], "file_store", "ws1", "ids")
    before = set(os.listdir(ids))
    proc = subprocess.Popen([sys.executable, "-c", DYING_KERNEL], cwd=os.getcwd(),
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"submitting\n"
    want = rng.randint(0, 40)

    def far_enough():
        if proc.poll() is not None:
            return True
        new = set(os.listdir(ids)) - before
        if not new:
            return False
        runs = os.path.join(os.path.dirname(ids), "runs")
        prefix = f"run{min(new)[3:]}."
        return sum(1 for r in os.listdir(runs) if r.startswith(prefix)) >= want
    wait_for(far_enough, what="its submit")
    proc.kill()
    proc.wait()
    proc.stdout.close()


def _live_run_pids():
    """Process group ids of runs running now (from the local job dirs' pid files)."""
    out = []
    base = os.path.join(local_root(), "jobs", "ws1")
    for job in os.listdir(base):
        runs = os.path.join(base, job, "runs")
        for run in os.listdir(runs) if os.path.isdir(runs) else []:
            try:
                pid = int(open(os.path.join(runs, run, "pid")).read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if (proc_stat(pid) or [b"X"])[0] not in (b"Z", b"X"):
                out.append(pid)
    return out


def _at_most_one_supervisor_per_job():
    jobdirs = supervisor_jobdirs(local_root())
    assert len(jobdirs) == len(set(jobdirs)), sorted(jobdirs)


def test_soak(xt_home, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    (xt_home / "xt_config.yaml").write_text(
        f"internal:\n  submit-grace-seconds: {GRACE}\ncompute-targets:\n  local:\n    max-runs: 4\n")
    session.reset_session()
    rng = random.Random(13)
    ns = {"__name__": "__main__"}
    submitted, killed = [], {"runner": 0, "supervisor": 0}
    kernel_kills = sorted(rng.sample(range(JOBS // 5, JOBS - JOBS // 10), 2))
    baseline = None
    for i in range(JOBS):
        # most jobs are tiny; every 8th sleeps a little, so kills find something running
        cell = "v = 1\n" if i % 8 else "import time\ntime.sleep(1)\nv = 1\n"
        job = api.run_cell(cell, ns)
        submitted.append(job.id)
        if i % 8 == 4:
            job.refresh()  # a poll right after the submit
        if i % 10 == 9:  # alternately a runner's process group and a supervisor
            pids = _live_run_pids() if i % 20 == 9 else supervisors(str(xt_home))
            if pids:
                pid = rng.choice(pids)
                try:
                    os.killpg(pid, signal.SIGKILL) if i % 20 == 9 else os.kill(pid, signal.SIGKILL)
                    killed["runner" if i % 20 == 9 else "supervisor"] += 1
                except ProcessLookupError:
                    pass  # it ended meanwhile
            _at_most_one_supervisor_per_job()
        if i in kernel_kills:
            _kill_a_kernel_mid_submit(rng)
        if i == JOBS // 5:  # warmed up: every verb used below has been used (pandas loaded)
            api.jobs()
            api.status(job.id)
            gc.collect()
            baseline = rss_kb()
    assert killed["runner"] and killed["supervisor"]

    def all_final():
        df = api.jobs()
        return [df] if (df["status"].isin(["completed", "failed", "cancelled"])).all() else None
    (df,) = wait_for(all_final, timeout=120, what="every run to end")
    _at_most_one_supervisor_per_job()
    assert df["problem"].eq("").all()
    jobs = list(df["job"])
    assert len(jobs) == len(set(jobs)) == JOBS + 2 and len(set(submitted)) == JOBS
    for job_id in jobs:
        job = api.status(job_id)
        for run in job.runs:
            info = job.info(run)
            assert info["state"] == "completed" or info["reason"], (run, info)
    # the last supervision (a new run) sweeps what killed runs left behind
    api.run_cell("v = 1\n", ns).wait(timeout=60, progress=False)
    wait_for(lambda: not supervisors(str(xt_home)), what="supervisors to exit")
    api.jobs(last=1)
    assert zombie_children() == []
    base = tmp / f"xt-runs-{os.getuid()}"
    assert list(base.iterdir()) == []
    gc.collect()
    assert rss_kb() <= baseline * 1.2, (baseline, rss_kb())
