"""The pool's box agent (the local supervisor program, run on each box) against real sshd boxes:
sweeps larger than max-runs finish with no kernel alive, max-runs holds across jobs, cancel of a
queued run, and an agent killed mid-sweep is started again by the next poll."""
from __future__ import annotations

import glob
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

import runner_helpers as rh
from test_pool import _alive, backend, configure
from xt_magic.core import session as session_mod
from xt_magic.core.compute import ssh

pytestmark = pytest.mark.sshd
TESTS = os.path.dirname(os.path.abspath(__file__))
FINAL = ("completed", "failed", "cancelled")


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    ssh.close()


def events_of(root, run, ws="ws1"):
    return rh.events(root, {"paths": {"events": f"{ws}/runs/{run}/events.jsonl"}})


def box_in_store(root, run):
    """The box a run was handed to, from its ``queued`` event (BOX:TOKEN)."""
    ids = [e["backend_id"] for e in events_of(root, run) if e.get("backend_id")]
    return ids[-1].rpartition(":")[0] if ids else None


def most_at_once(root, runs, box):
    """The most runs of ``box`` whose [running, final] intervals overlap (from the store)."""
    points = []
    for run in runs:
        evs = events_of(root, run)
        if box_in_store(root, run) != box:
            continue
        start = next((e["ts"] for e in evs if e.get("state") == "running"), None)
        end = next((e["ts"] for e in evs if e.get("state") in FINAL), None)
        if start is not None:
            assert end is not None, (run, evs)
            points += [(start, 1), (end, -1)]
    now = most = 0
    for _t, step in sorted(points, key=lambda p: (p[0], p[1])):  # an end before a start at a tie
        now += step
        most = max(most, now)
    return most


def states(root, runs):
    out = {}
    for run in runs:
        evs = [e.get("state") for e in events_of(root, run)]
        out[run] = next((s for s in evs if s in FINAL), evs[-1] if evs else None)
    return out


def wait_store(root, runs, timeout=120):
    """Wait on the store alone (no backend, no poll) until every run is final."""
    return rh.wait_for(lambda: (lambda st: st if all(s in FINAL for s in st.values()) else None)(
        states(root, runs)), timeout, f"{runs} to finish from the store alone")


SUBMIT = """
import json, sys
sys.path.insert(0, {tests!r})
from remote_helpers import launches_for
from xt_magic.core import session
from xt_magic.core.compute import get_backend
be = get_backend(session.get_session(), "pool")
out = {{"root": be.store.root, "runs": []}}
for job in {jobs!r}:
    name, launches = launches_for(be.store, {cell!r}, job=job, runs={runs},
                                  hparams=[{{"i": i}} for i in range({runs})])
    be.submit(name, launches)
    out["runs"] += [la.run_id for la in launches]
print(json.dumps(out))
"""


def submit_and_exit(cell, jobs=("job1",), runs=6):
    """Submit from a separate process that exits right after: no kernel is alive afterwards."""
    code = SUBMIT.format(tests=TESTS, jobs=list(jobs), cell=cell, runs=runs)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(TESTS), TESTS]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sweep_larger_than_max_runs_completes_with_no_kernel(sshd_factory, xt_home):
    """Two jobs of 3 runs over two boxes of max-runs 1, submitted by a process that then exits:
    the agents start every queued run, never more than one at once per box across both jobs."""
    servers = [sshd_factory(), sshd_factory()]
    configure(xt_home, servers, max_runs=1)
    cell = "import time\ntime.sleep(0.3)\nout = i"
    sub = submit_and_exit(cell, jobs=("job1", "job2"), runs=3)
    root, runs = sub["root"], sub["runs"]
    assert len(runs) == 6
    assert wait_store(root, runs) == {r: "completed" for r in runs}
    by_box = {r: box_in_store(root, r) for r in runs}
    assert set(by_box.values()) == {"b1", "b2"}  # spread by load: live runs + those given
    assert most_at_once(root, runs, "b1") == 1 and most_at_once(root, runs, "b2") == 1
    for server in servers:
        # an agent per job on the box; its spec holds the launch secrets: 0600 in a 0700 dir
        specs = glob.glob(os.path.join(server.dir, "work", "jobs", "*", "job.json"))
        assert 1 <= len(specs) <= 2
        for spec in specs:
            assert stat.S_IMODE(os.stat(spec).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(os.path.dirname(spec)).st_mode) == 0o700
        for log in glob.glob(os.path.join(server.dir, "work", "runs", "*", "runner.log")):
            assert "XT_LAUNCH" not in open(log).read()
    key = rh.job_key(root, "job1").hex()
    for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        if os.path.isfile(path):
            assert key.encode() not in open(path, "rb").read(), path  # no secret in the store


def test_max_runs_two_on_one_box(sshd, xt_home):
    configure(xt_home, [sshd], max_runs=2)
    sub = submit_and_exit("import time\ntime.sleep(0.4)", runs=6)
    root, runs = sub["root"], sub["runs"]
    assert wait_store(root, runs) == {r: "completed" for r in runs}
    assert most_at_once(root, runs, "b1") <= 2


def gate_cell(gate):
    return f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)\n"


def running(root, run):
    return any(e.get("state") == "running" for e in events_of(root, run))


def test_cancel_a_queued_run(sshd, xt_home, tmp_path):
    configure(xt_home, [sshd], max_runs=1)
    gate = tmp_path / "gate"
    sub = submit_and_exit(gate_cell(gate), runs=3)
    root, (r1, r2, r3) = sub["root"], sub["runs"]
    rh.wait_for(lambda: running(root, r1), 60, "the first run to start")
    session_mod.reset_session()
    be = backend()
    be.cancel("job1", [r2])
    assert states(root, [r2])[r2] == "cancelled"
    assert os.path.exists(os.path.join(sshd.dir, "work", "runs", r2, "cancel"))
    gate.write_text("go")
    assert wait_store(root, [r1, r3]) == {r1: "completed", r3: "completed"}
    assert not running(root, r2)  # the agent never started it
    assert states(root, [r2])[r2] == "cancelled"


def test_agent_killed_mid_sweep_is_restarted_by_the_next_poll(sshd, xt_home, tmp_path):
    configure(xt_home, [sshd], max_runs=1)
    gate = tmp_path / "gate"
    sub = submit_and_exit(gate_cell(gate), runs=4)
    root, runs = sub["root"], sub["runs"]
    rh.wait_for(lambda: running(root, runs[0]), 60, "the first run to start")
    (agent_file,) = glob.glob(os.path.join(sshd.dir, "work", "jobs", "*", "supervisor"))
    first = int(open(agent_file).read().split()[0])
    os.kill(first, signal.SIGKILL)
    rh.wait_for(lambda: not _alive(first), 10, "the agent to die")
    gate.write_text("go")
    # the running run (its own session) finishes and reports itself; nothing starts the rest
    assert wait_store(root, runs[:1]) == {runs[0]: "completed"}
    assert states(root, runs[1:2]) == {runs[1]: "queued"} and not running(root, runs[1])
    be = backend()

    def done():
        be.poll("job1", runs)
        st = states(root, runs)
        return st if all(s in FINAL for s in st.values()) else None
    assert rh.wait_for(done, 120, "the sweep to finish") == {r: "completed" for r in runs}
    assert int(open(agent_file).read().split()[0]) != first  # a new agent, from the box's spec
    assert most_at_once(root, runs, "b1") == 1



def test_the_box_agent_forks_the_next_jobs_supervisor(sshd, xt_home, tmp_path):
    """After a kernel's first job on a box, the box's agent stays: the next job's supervisor is
    its fork (no Python start-up on the box), and the job runs as before."""
    from procs import agents, proc_stat, supervisors
    from xt_magic.core import api
    configure(xt_home, [sshd], max_runs=2)
    ns = {"__name__": "__main__"}
    first = api.run_cell("v = 1", ns, target="pool", outputs=["v"])
    first.wait(timeout=120, progress=False)
    work = os.path.join(sshd.dir, "work")
    (agent,) = agents(work)
    rh.wait_for(lambda: not supervisors(work), what="the first job's supervisor to exit")
    gate = tmp_path / "gate"
    job = api.run_cell(gate_cell(gate), ns, target="pool")
    try:
        (sup,) = rh.wait_for(lambda: supervisors(os.path.join(work, "jobs")),
                             what="the second job's supervisor")
        assert int(proc_stat(sup)[1]) == agent
    finally:
        gate.write_text("")
    job.wait(timeout=120, progress=False)
    assert job.state(job.runs[0]) == "completed" and agents(work) == [agent]
    # another SSH connection (another kernel, a reconnect) hands its jobs to the same agent
    from xt_magic.core.compute import ssh
    ssh.close()  # every cached connection: the next command comes over a new one
    rh.wait_for(lambda: not supervisors(os.path.join(work, "jobs")), what="supervisors to exit")
    again = api.run_cell("v = 2", ns, target="pool", outputs=["v"])
    again.wait(timeout=120, progress=False)
    assert again.results()["v"] == 2 and agents(work) == [agent]
