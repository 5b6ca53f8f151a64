"""Shell-injection fuzz for the remote targets: names, paths, hp and env values with quotes,
semicolons, newlines and ``$()`` reach their destination intact and never execute anything
(a canary file is never created)."""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runner_helpers as rh
from xt_magic.core import session as session_mod
from xt_magic.core.compute import get_backend, ssh
from xt_magic.core.compute.pool import status_script
from xt_magic.core.compute.slurm import batch_script
from xt_magic.core.errors import TargetError

CANARY_DIR = "/tmp/xt_injection_canary"
NASTY = [
    f"$(touch {CANARY_DIR}/a)", f"`touch {CANARY_DIR}/b`", f"x; touch {CANARY_DIR}/c",
    f"x\ntouch {CANARY_DIR}/d", f"'; touch {CANARY_DIR}/e; '", f'"; touch {CANARY_DIR}/f; "',
    f"x && touch {CANARY_DIR}/g", f"x | touch {CANARY_DIR}/h", "${IFS}*?[a]~", "-rf", "%s%n",
]
# Text that shell metacharacters and the canary command are drawn from.
nasty_text = st.lists(st.sampled_from(NASTY) | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
    max_size=12), min_size=1, max_size=4).map("".join)


@pytest.fixture(autouse=True)
def canary():
    os.makedirs(CANARY_DIR, exist_ok=True)
    for f in os.listdir(CANARY_DIR):
        os.unlink(os.path.join(CANARY_DIR, f))
    yield
    assert os.listdir(CANARY_DIR) == [], "an injected command ran"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=nasty_text, run=st.sampled_from(["run1.1", "r-2_x.3"]))
def test_pool_scripts_quote_everything(tmp_path, segment, run):
    """The status script and the box agent's command line (as the pool builds them) run by a
    real sh with hostile work dirs: the live run is found, then cancelled, and nothing else runs."""
    import json
    import sys
    from xt_magic.core.compute import local_supervisor
    from xt_magic.runner.runner import proc_start
    work = tmp_path / segment.replace("\0", "")
    rundir = work / "runs" / run
    rundir.mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (rundir / "pid").write_text(f"{sleeper.pid} {proc_start(sleeper.pid)}")
        out = subprocess.run(["sh", "-c", status_script(str(work), [run])], capture_output=True,
                             text=True).stdout
        assert f"{run} alive" in out and "live 1" in out
        jobdir = work / "jobs" / "t1"
        jobdir.mkdir(parents=True, exist_ok=True)
        (jobdir / "job.json").write_text(json.dumps({
            "launches": [], "runner": rh.RUNNER, "runs_dir": str(work / "runs"), "grace": 1}))
        argv = [sys.executable, local_supervisor.__file__, "--cancel", str(jobdir), run]
        assert subprocess.run(["sh", "-c", ssh.join(argv)]).returncode == 0
        assert sleeper.wait(10) in (-15, -9)  # its group was killed
    finally:
        sleeper.kill()
        sleeper.wait()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(nasty_text, min_size=3, max_size=3))
def test_slurm_batch_script_quotes_everything(tmp_path, values):
    run_dir, runner, ticket = (str(tmp_path / "runs" / values[0].replace("\0", "")),
                               values[1], values[2])
    script = batch_script("job1", ["bash", "-c", 'printf "%s|%s" "$4" "$5"', "python"],
                          [run_dir], [runner], [ticket], "ab12")
    out = subprocess.run(["bash", "-c", script], capture_output=True, cwd=tmp_path,
                         env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"})
    assert out.stdout.decode("utf-8", "surrogateescape") == f"{runner}|{ticket}"


@pytest.mark.parametrize("bad", NASTY + ["run1/../../etc", "", ".hidden"])
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(TargetError):
        ssh.check_name(bad, "run id")


@pytest.mark.sshd
def test_pool_end_to_end_with_hostile_names_and_values(sshd, xt_home):
    """Box name, work-dir, hp and env values full of shell syntax: a real run over SSH."""
    box_name = "b;touch /tmp/xt_injection_canary/box"
    entry = sshd.box(**{"work-dir": os.path.join(sshd.dir, f"work $(touch {CANARY_DIR}/wd); x")})
    with open(os.environ["XT_USER_CONFIG"], "w") as fh:
        yaml.safe_dump({"boxes": {box_name: entry},
                        "compute-targets": {"pool": {"service": "pool", "boxes": [box_name]}}}, fh)
    sshd.trust(xt_home)
    be = get_backend(session_mod.get_session(), "pool")
    hp = {"lr": NASTY[0], "name": NASTY[3]}
    env = {"XT_EVIL": NASTY[4] + NASTY[2]}
    made = rh.make_job(be.store.root, "import os\nres = (lr, name, os.environ['XT_EVIL'])",
                       hparams=hp, env=env, outputs=["res"])
    run, _p, ticket = made[0]
    be.submit("job1", [rh.launch_for(be.store.root, run, ticket)])

    def done():
        be.poll("job1", [run])
        return be._state(run)["state"] in ("completed", "failed")
    rh.wait_for(done, 60, "run to finish")
    assert be._state(run)["state"] == "completed", be._state(run)
    import cloudpickle
    res = cloudpickle.loads(rh.read(be.store.root, ticket["paths"]["vars"]))["res"]
    assert res == (hp["lr"], hp["name"], env["XT_EVIL"])
    assert os.path.isdir(os.path.join(entry["work-dir"], "runs", run))  # the literal name
    ssh.close()


@pytest.mark.slurm
@pytest.mark.sshd
def test_slurm_over_ssh_with_hostile_option_values(slurm, sshd_factory, xt_home):
    """Option values full of shell syntax go to sbatch on the login node as single arguments."""
    server = sshd_factory(env={"SLURM_CONF": slurm.conf, "XT_HOME": str(xt_home)})
    server.trust(xt_home)
    comment = f"$(touch {CANARY_DIR}/s); `touch {CANARY_DIR}/t` '\" x"
    with open(os.environ["XT_USER_CONFIG"], "w") as fh:
        yaml.safe_dump({"boxes": {"login1": server.box()},
                        "compute-targets": {"cluster": {
                            "service": "slurm", "login": "login1",
                            "sbatch-directives": ["--comment=" + __import__("shlex").quote(comment)]}}},
                       fh)
    be = get_backend(session_mod.get_session(), "cluster")
    made = rh.make_job(be.store.root, "x = 1", hparams={"lr": NASTY[2]})
    run, _p, ticket = made[0]
    be.submit("job1", [rh.launch_for(be.store.root, run, ticket)])
    slurm_id = be._state(run)["backend_id"]
    out = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True)
    assert f"Comment={comment}" in out.stdout

    def done():
        be.poll("job1", [run])
        return be._state(run)["state"] in ("completed", "failed")
    rh.wait_for(done, 60, "slurm run to finish")
    assert be._state(run)["state"] == "completed"
    ssh.close()


def test_sbatch_directive_that_is_not_one_option_is_refused():
    from xt_magic.core.compute.slurm import sbatch_args
    from xt_magic.core.errors import ConfigError
    for bad in ["--comment=$(touch x); y", "--a b c", "notanoption", "--x 'unterminated"]:
        with pytest.raises(ConfigError):
            sbatch_args({"sbatch-directives": [bad]}, "job1", 1, "/w")
