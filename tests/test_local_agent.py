"""The box agent on the local target: a long-lived process that forks each new job's supervisor
(no Python start-up per job), keyed by interpreter and environment, stopping when idle, replaced
when killed, and never letting one run's state reach another job's runs."""
from __future__ import annotations

import os
import signal

import pytest

from procs import agents, proc_stat, supervisors
from runner_helpers import wait_for
from test_jobs_local import LEAK_CELL
from xt_magic.core import api, session
from xt_magic.core.errors import XTError
from xt_magic.core.paths import local_root

NS = {"__name__": "__main__"}


def _config(xt_home, extra=""):
    (xt_home / "xt_config.yaml").write_text(
        "compute-targets:\n  local:\n    service: pool\n    boxes: [localhost]\n" + extra)
    session.reset_session()


def _done(job):
    job.wait(timeout=120, progress=False)
    assert job.results(raise_errors=True) is not None
    return job


def _jobdir(job):
    return os.path.join(local_root(), "jobs", "ws1", job.id)


def test_the_next_job_is_supervised_by_a_fork_of_the_agent(xt_home, tmp_path):
    _config(xt_home)
    _done(api.run_cell("v = 1", NS))
    (agent,) = agents(str(xt_home))
    gate = tmp_path / "gate"
    job = api.run_cell(f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n"
                       "    time.sleep(0.01)\n", NS)
    try:
        (sup,) = wait_for(lambda: supervisors(_jobdir(job)), what="the job's supervisor")
        assert int(proc_stat(sup)[1]) == agent  # forked by the agent, not a cold start
        assert agents(str(xt_home)) == [agent]
    finally:
        gate.write_text("")
    _done(job)
    assert open(os.path.join(_jobdir(job), "supervisor.log")).read() == ""


def test_jobs_through_the_agent_start_clean(xt_home):
    """No module global, environment variable or sys.modules entry a run sets reaches the runs
    of the next jobs, which the same agent supervises."""
    _config(xt_home)
    seen = []
    for i in range(3):
        job = _done(api.run_cell(LEAK_CELL, NS, hp={"i": [i]}, outputs=["seen"]))
        seen.append(job.results()["seen"])
        assert len(agents(str(xt_home))) == 1
    assert seen == [[None, None, None, False, None]] * 3


def test_a_changed_environment_gets_its_own_agent(xt_home, monkeypatch):
    """An agent's forks get exactly what a cold start would: a job submitted with another
    environment is not supervised by the agent of the first."""
    _config(xt_home)
    _done(api.run_cell("v = 1", NS))
    monkeypatch.setenv("XT_AGENT_TEST", "second")
    job = _done(api.run_cell("import os\nv = os.environ.get('XT_AGENT_TEST')", NS,
                             outputs=["v"]))
    assert job.results()["v"] == "second"
    assert len(agents(str(xt_home))) == 2


def test_a_killed_agent_is_replaced(xt_home):
    _config(xt_home)
    _done(api.run_cell("v = 1", NS))
    (agent,) = agents(str(xt_home))
    os.kill(agent, signal.SIGKILL)
    wait_for(lambda: agent not in agents(str(xt_home)) and (proc_stat(agent) or [b"X"])[0]
             in (b"Z", b"X"), what="the agent to die")
    job = _done(api.run_cell("v = 2", NS, outputs=["v"]))
    assert job.results()["v"] == 2
    (new,) = agents(str(xt_home))
    assert new != agent


def test_an_idle_agent_stops(xt_home):
    _config(xt_home, "    agent-idle-seconds: 1\n")
    _done(api.run_cell("v = 1", NS))
    wait_for(lambda: not agents(str(xt_home)), timeout=30, what="the idle agent to stop")
    assert not os.path.exists(os.path.join(local_root(), "agents", os.listdir(
        os.path.join(local_root(), "agents"))[0], "sock"))
    _done(api.run_cell("v = 1", NS))  # and the next job starts one again


def test_agent_idle_seconds_zero_means_no_agent(xt_home):
    _config(xt_home, "    agent-idle-seconds: 0\n")
    for _ in range(2):
        _done(api.run_cell("v = 1", NS))
    assert agents(str(xt_home)) == []
    assert not os.path.exists(os.path.join(local_root(), "agents"))


def test_a_bad_agent_idle_seconds_names_the_key(xt_home):
    _config(xt_home, "    agent-idle-seconds: soon\n")
    with pytest.raises(XTError, match="agent-idle-seconds") as info:
        api.run_cell("v = 1", NS)
    assert "\n" not in str(info.value)
