"""SlurmBackend against a real single-node Slurm (and over SSH to a "login node")."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

import runner_helpers as rh
from remote_helpers import launches_for, wait_final
from runner_helpers import wait_for
from xt_magic.core import session as session_mod
from xt_magic.core.compute import get_backend, ssh
from xt_magic.core.compute.slurm import batch_script, outcome, parse_scontrol, sbatch_args
from xt_magic.core.errors import ConfigError


def configure(target: dict, boxes: dict | None = None) -> None:
    config = {"compute-targets": {"cluster": {"service": "slurm", **target}}}
    if boxes:
        config["boxes"] = boxes
    with open(os.environ["XT_USER_CONFIG"], "w") as fh:
        yaml.safe_dump(config, fh)


def backend():
    return get_backend(session_mod.get_session(), "cluster")


# ---- script building and parsing (no Slurm needed) -------------------------------------------

def test_sbatch_args_are_argv_and_validated():
    target = {"partition": "gpu", "nodes": 2, "cpus-per-task": 4, "gpus": "a100:1", "mem": "8G",
              "account": "proj x", "qos": "high", "sbatch-directives": ["#SBATCH --exclusive",
                                                                      "--constraint 'a b'"]}
    args = sbatch_args(target, "job3", 4, "/w/jobs/job3", max_seconds=61)
    assert "--array=0-3" in args and "--output=/w/jobs/job3/slurm-%A_%a.out" in args
    assert "--account=proj x" in args and "--time=2" in args and "--gpus=a100:1" in args
    assert args[-3:] == ["--exclusive", "--constraint", "a b"]
    assert "--export=PATH,HOME,USER,LANG,XT_HOME" in args
    for bad in ({"partition": "a\n#SBATCH --uid=0"}, {"sbatch-directives": ["rm -rf /"]}):
        with pytest.raises(ConfigError):
            sbatch_args(bad, "job3", 1, "/w")


def test_batch_script_quotes_paths(tmp_path):
    weird = str(tmp_path / "d i r$(touch canary);'\"")
    script = batch_script("job1", ["bash", "-c", 'echo "$4 $5"', "python"],
                          [weird + "/a", weird + "/b"], ["r1", "r 2"], ["t1", "t;2"], "ab12")
    path = tmp_path / "job.sh"
    path.write_text(script)
    out = subprocess.run(["bash", str(path)], env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"},
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout == "r 2 t;2\n"
    assert os.path.isdir(weird + "/b") and not (tmp_path / "canary").exists()


def test_parse_scontrol_and_outcomes():
    text = ("JobId=5 ArrayJobId=5 ArrayTaskId=2-3 JobName=x JobState=PENDING Reason=Resources "
            "ExitCode=0:0 TimeLimit=UNLIMITED\n"
            "JobId=6 ArrayJobId=5 ArrayTaskId=1 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15 "
            "TimeLimit=00:01:00\n"
            "JobId=7 ArrayJobId=5 ArrayTaskId=0 JobState=FAILED Reason=NonZeroExitCode "
            "ExitCode=3:0 TimeLimit=UNLIMITED Command=/a b/c\n")
    recs = parse_scontrol(text)
    from xt_magic.core.compute.slurm import _task_state
    assert outcome(_task_state(recs, "5_3"), "5_3") is None
    state, reason, code = outcome(_task_state(recs, "5_1"), "5_1")
    assert state == "failed" and "time limit 00:01:00 reached" in reason
    assert outcome(_task_state(recs, "5_0"), "5_0")[::2] == ("failed", 3)
    assert outcome(None, "9")[0] == "failed"


# ---- real Slurm ------------------------------------------------------------------------------


@pytest.mark.slurm
def test_job_runs_and_results_return(slurm):
    configure({"partition": "debug"})
    be = backend()
    job, launches = launches_for(be.store, "y = x + 1\nprint('on slurm', y)", inputs={"x": 1},
                                 outputs=["y"])
    run = launches[0].run_id
    be.submit(job, launches)
    assert be._state(run)["backend_id"].isdigit()
    states = wait_final(be, job, [run])
    assert states[run]["state"] == "completed", states[run]
    assert "on slurm 2" in rh.read(be.store.root, launches[0].ticket["paths"]["console"]).decode()


@pytest.mark.slurm
def test_sweep_is_one_job_array(slurm):
    configure({})
    be = backend()
    job, launches = launches_for(be.store, "out = lr * 10", runs=3,
                                 hparams=[{"lr": i} for i in range(3)], outputs=["out"])
    runs = [la.run_id for la in launches]
    be.submit(job, launches)
    ids = [be._state(r)["backend_id"] for r in runs]
    base = ids[0].split("_")[0]
    assert ids == [f"{base}_{i}" for i in range(3)]
    states = wait_final(be, job, runs)
    assert all(s["state"] == "completed" for s in states.values()), states
    import cloudpickle
    outs = [cloudpickle.loads(rh.read(be.store.root, la.ticket["paths"]["vars"]))["out"]
            for la in launches]
    assert outs == [0, 10, 20]


@pytest.mark.slurm
def test_failure_exit_code(slurm):
    configure({})
    be = backend()
    job, launches = launches_for(be.store, "import os\nos._exit(3)")
    run = launches[0].run_id
    be.submit(job, launches)
    info = wait_final(be, job, [run])[run]
    assert info["state"] == "failed" and info["exit_code"] == 3
    assert "exit code 3" in info["reason"]


@pytest.mark.slurm
def test_cancel(slurm):
    configure({})
    be = backend()
    job, launches = launches_for(be.store, "import time\ntime.sleep(300)")
    run = launches[0].run_id
    be.submit(job, launches)
    rh.wait_for(lambda: be._state(run)["state"] == "running", 60, "running")
    be.cancel(job, [run])
    assert be._state(run)["state"] == "cancelled"
    slurm_id = be._state(run)["backend_id"]

    def slurm_state():
        out = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True,
                             text=True).stdout
        return "JobState=CANCELLED" in out
    rh.wait_for(slurm_state, 30, "slurm to show CANCELLED")


@pytest.mark.slurm
def test_time_limit_is_failed_with_reason(slurm):
    configure({"time": 1})  # one minute: Slurm's smallest; it checks limits every ~30 s
    be = backend()
    job, launches = launches_for(be.store, "import time\ntime.sleep(600)")
    run = launches[0].run_id
    be.submit(job, launches)
    info = wait_final(be, job, [run], timeout=180)[run]
    assert info["state"] == "failed" and "time limit" in info["reason"], info


@pytest.mark.slurm
@pytest.mark.sshd
def test_login_node_over_ssh(slurm, sshd_factory, xt_home):
    server = sshd_factory(env={"SLURM_CONF": slurm.conf, "XT_HOME": str(xt_home)})
    server.trust(xt_home)
    configure({"login": "login1"}, boxes={"login1": server.box()})
    be = backend()
    assert be.exec.label == "login1"
    job, launches = launches_for(be.store, "print('via login node')", runs=2)
    runs = [la.run_id for la in launches]
    be.submit(job, launches)
    states = wait_final(be, job, runs)
    assert all(s["state"] == "completed" for s in states.values()), states
    ssh.close()


@pytest.mark.slurm
def test_run_cell_sweep_end_to_end(slurm):
    """api.run_cell (the %%xt_run path) on Slurm: a 2-point sweep as one array, results back."""
    from xt_magic.core import api
    configure({"partition": "debug"})
    job = api.run_cell("z = k * 3\n", {"__name__": "__main__"}, target="cluster",
                       hp={"k": [1, 2]}, outputs=["z"])
    job.wait(timeout=90, progress=False)
    res = job.results()
    assert sorted(res["z"].values()) == [3, 6]
    assert len({backend()._state(r.run)["backend_id"].split("_")[0] for r in res}) == 1


REQUEUE_CELL = """\
import time
import xt_magic
from xtlib.run import Run
state = xt_magic.restore({"starts": 0})
state["starts"] += 1
xt_magic.checkpoint(state)
print("start", state["starts"], "resuming", Run().is_resuming(), flush=True)
if state["starts"] == 1:
    time.sleep(600)  # preempted here: the test requeues the Slurm job
starts = state["starts"]
"""


@pytest.mark.slurm
def test_requeued_task_resumes_from_its_checkpoint(slurm):
    """A Slurm requeue (preemption) starts the run again with its launch secret, resuming from
    its checkpoint; the launch file is gone once the run is final."""
    from xt_magic.core import api
    from xt_magic.core.jobs.context import _Ctx
    configure({"partition": "debug"})
    job = api.run_cell(REQUEUE_CELL, {"__name__": "__main__"}, target="cluster",
                       outputs=["starts"])
    run = job.runs[0]
    ctx = _Ctx(session_mod.get_session())
    console = ctx.store.local_path(ctx.layout.run(run, "console.txt"))
    wait_for(lambda: os.path.exists(console) and "start 1" in open(console).read(), 60)
    slurm_id = backend()._state(run)["backend_id"]
    subprocess.run(["scontrol", "requeue", slurm_id], check=True, capture_output=True)
    def pending():
        out = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True,
                             text=True).stdout
        return "JobState=PENDING" in out
    wait_for(pending, 60)
    # a requeued job is held back (BeginTime about two minutes on): make it eligible now
    subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"], check=True,
                   capture_output=True)
    job.wait(timeout=180, progress=False)
    text = open(console).read()
    assert job.results()["starts"] == 2, text
    assert "start 2 resuming True" in text
    rundir = os.path.join(backend().work_dir, "runs", run)
    # the task's script removes it once the runner it started has exited (after the final event)
    wait_for(lambda: not [f for f in os.listdir(rundir) if "launch" in f], 30)


@pytest.mark.slurm
def test_a_runner_changed_on_the_shared_filesystem_never_runs(slurm, tmp_path):
    """The node starts the store's runner.py only if its sha256 is the one the kernel put in
    the job script: anyone who can write the store cannot run code as the user this way."""
    configure({})
    be = backend()
    job, launches = launches_for(be.store, "x = 1\n", outputs=["x"])
    run = launches[0].run_id
    canary = tmp_path / "pwned"
    be.store.write_bytes(launches[0].runner_path,
                         f"open({str(canary)!r}, 'w').write('x')\n".encode())
    be.submit(job, launches)
    info = wait_final(be, job, [run])[run]
    assert info["state"] == "failed" and not canary.exists(), info


@pytest.mark.slurm
def test_kernel_environment_does_not_reach_the_job(slurm, monkeypatch):
    """--export whitelist: a secret in the kernel's environment is not in the job's."""
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "canary-secret-1234")
    configure({})
    be = backend()
    job, launches = launches_for(be.store, "import os\nseen = sorted(os.environ)\n",
                                 outputs=["seen"], env={"MINE": "1"})
    run = launches[0].run_id
    be.submit(job, launches)
    assert wait_final(be, job, [run])[run]["state"] == "completed"
    import cloudpickle
    seen = cloudpickle.loads(rh.read(be.store.root, launches[0].ticket["paths"]["vars"]))["seen"]
    assert "AZURE_CLIENT_SECRET" not in seen and "MINE" in seen and "XT_HOME" in seen
    script = open(os.path.join(be.work_dir, "jobs", job, "job.sh")).read()
    assert "canary-secret-1234" not in script


@pytest.mark.slurm
@pytest.mark.azurite
def test_slurm_with_blob_store(slurm, azurite, azurite_container, ip):
    """Blob store: runner.py + ticket are copied next to the run; the job reaches the store only
    through the ticket's SAS URLs."""
    configure({})
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n" + azurite.store_entry(azurite_container) +
                 "xt-services: {storage: teamstore}\n")
    res = ip.run_cell_magic("xt_run", "--target cluster --outputs y --wait", "y = 'blob ok'\n")
    assert res.runs_list[0].state == "completed", res.runs_list[0].reason
    assert res["y"] == "blob ok"
    run_dir = os.path.join(backend().work_dir, "runs", "run1.1")
    ticket = open(os.path.join(run_dir, "ticket.json")).read()
    assert azurite.key not in ticket and "sig=" not in ticket  # the URLs came in launch.json,
    assert not os.path.exists(os.path.join(run_dir, "launch.json"))  # deleted once read
    script = open(os.path.join(backend().work_dir, "jobs", "job1", "job.sh")).read()
    assert "sig=" not in script and "export XT_LAUNCH_FILE=\"$L\"" in script
