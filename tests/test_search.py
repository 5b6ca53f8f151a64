"""Adaptive search and early stopping end to end on the real local target: the search's driver
makes the runs, survives the submitting process, and stops runs early with the rule's reason."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from runner_helpers import wait_for as until
from xt_magic.core import api, session
from xt_magic.core.errors import JobError
from xt_magic.core.jobs import search
from xt_magic.core.jobs.context import _Ctx
from xt_magic.core.protocol import events
from xt_magic.core.protocol.layout import Layout

# a 2-D quadratic with noise (the noise fixed by the point, so a value depends on the point only)
QUADRATIC = ("import random, xt_magic\n"
             "noise = random.Random(repr((x, y))).random()\n"
             "xt_magic.log(step=1, loss=(x - 0.3) ** 2 + (y + 0.2) ** 2 + 0.01 * noise)\n")
SPACE = {"x": "$uniform(-2,2)", "y": "$uniform(-2,2)"}


def _trial_lines(job_id: str) -> list[dict]:
    ctx = _Ctx(session.get_session())
    data = ctx.store.read_from(Layout(ctx.ws).search(job_id, "trials.jsonl"), 0)
    return events.parse(data)


def _points(job) -> list[tuple]:
    return [tuple(sorted(p.items())) for p in job.record.hparams]


def test_bayesian_beats_random_with_the_same_seed_and_budget():
    ns = {"__name__": "__main__"}
    bayes = api.run_cell(QUADRATIC, ns, hp=SPACE, search="bayesian", runs=30, concurrent=2,
                         metric="loss", maximize=False, seed=11)
    rand = api.run_cell(QUADRATIC, ns, hp=SPACE, search="random", runs=30, seed=11)
    assert bayes.record.runs == [] and bayes.status == "running"  # made as the search goes
    from xt_magic.widgets.monitor import JobMonitor
    monitor = JobMonitor(bayes.id, start=False)
    assert not monitor.runs and not monitor.done
    bayes.wait(timeout=300, progress=False)
    rand.wait(timeout=300, progress=False)

    assert bayes.states() == {"completed": 30} and len(set(_points(bayes))) == 30
    history = bayes.search_history()
    assert list(history["run"]) == [f"run1.{i}" for i in range(1, 31)]
    best_bayes = history["best"].iloc[-1]
    assert best_bayes == history["value"].min()
    assert list(history["best"]) == list(history["value"].cummin())
    best_random = rand.metrics()["loss"].min()
    assert best_bayes < best_random, (best_bayes, best_random)
    # the study state in the store: one point per trial, recorded before its result
    lines = _trial_lines("job1")
    points = [ln["trial"] for ln in lines if "point" in ln]
    assert sorted(points) == list(range(30))
    order = [(ln["trial"], "point" in ln) for ln in lines if "trial" in ln]
    assert all(order.index((n, True)) < order.index((n, False)) for n in range(30))
    assert lines[-1] == {"done": True}
    assert "bayesian search on min loss: 30/30 runs, best" in repr(bayes)
    monitor.tick()  # the monitor grows with the search: every run, best so far, trial history
    assert len(monitor.runs) == 30 and monitor.done
    panel = monitor.search_view.value
    assert panel.count("class='xt-trial'") == 30 and "xt-stopped" not in panel
    assert f"{best_bayes:.4g}" in panel and "xt-best-line" in panel


def test_search_resumes_after_the_submitter_and_driver_are_killed(tmp_path):
    script = tmp_path / "submit.py"
    script.write_text(
        "from xt_magic.core import api\n"
        f"QUADRATIC = {QUADRATIC!r}\n"
        f"job = api.run_cell(QUADRATIC, {{'__name__': '__main__'}}, hp={SPACE!r}, "
        "search='bayesian', runs=30, concurrent=2, metric='loss', maximize=False, seed=4)\n"
        "print(job.id, flush=True)\n"
        "job.wait(timeout=600, progress=False)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().decode().strip() == "job1"
        until(lambda: sum("point" in ln for ln in _trial_lines("job1")) >= 10, 120,
              "10 trials")
        ctx = _Ctx(session.get_session())
        folder = search.driver_dir(ctx.store, ctx.ws, "job1")
        with open(os.path.join(folder, "driver.pid")) as fh:
            driver_pid = int(fh.read().split()[0])
        os.kill(proc.pid, signal.SIGKILL)
        os.kill(driver_pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = sum("point" in ln for ln in _trial_lines("job1"))
    assert killed_at < 30

    session.reset_session()  # a new kernel: everything from the store
    job = api.job("job1")
    assert not job.done and len(job.runs) == killed_at
    job.wait(timeout=300, progress=False)  # restarts the driver from the recorded trials

    assert job.states() == {"completed": 30}
    assert len(set(_points(job))) == 30
    lines = _trial_lines("job1")
    assert sorted(ln["trial"] for ln in lines if "point" in ln) == list(range(30))
    assert sorted(ln["trial"] for ln in lines if "result" in ln) == list(range(30))


# runs with the same curve, and one (c == 5) far worse that would run on for two minutes
CURVES = ("import os, time, xt_magic\n"
          "curve = [9.0, 9.0, 9.0, 9.0] if c == 5 else [1.0, 0.8, 0.6, 0.5]\n"
          "for step, loss in enumerate(curve, 1):\n"
          "    xt_magic.log(step=step, loss=loss)\n"
          "last = curve[-1]\n"
          "open(os.path.join(os.environ['XT_OUTPUT_DIR'], 'curve.txt'), 'w').write(str(curve))\n"
          "if c == 5:\n"
          "    time.sleep(120)\n")


def test_early_stop_median_on_a_grid_sweep(ip):
    api.config_set({"early-stopping.delay-evaluation": "2"})
    cell = CURVES
    job = ip.run_cell_magic("xt_run", "--hp c=[5,0,1,2,3,4] --early-stop median --metric loss "
                            "--minimize --outputs last", cell)
    job.wait(timeout=100, progress=False)
    assert job.state("run1.1") == "cancelled"
    # median at step 2: its best so far 9 against the others' running average (1.0 + 0.8) / 2
    assert job.info("run1.1")["reason"] == "early stopped (median at step 2: 9 vs 0.9)"
    assert [job.state(f"run1.{i}") for i in range(2, 7)] == ["completed"] * 5
    df = job.metrics()
    assert list(df[df["run"] == "run1.1"]["loss"]) == [9.0] * 4  # its metrics are kept
    stopped = job.results().runs["run1.1"]  # and its outputs so far, signed by its runner
    assert stopped.variables == {"last": 9.0}
    with open(os.path.join(stopped.files_dir, "curve.txt")) as fh:
        assert fh.read() == str([9.0] * 4)
    history = job.search_history()
    assert list(history["stopped"]) == [True] + [False] * 5
    assert history["best"].iloc[-1] == 0.5
    from xt_magic.widgets.compare import CompareView
    compare = CompareView(job.id, "loss")  # %xt_compare shows the search too
    assert "stopped early" in compare.search_view.value and "<svg" in compare.search_view.value
    from xt_magic.widgets.monitor import JobMonitor
    monitor = JobMonitor(job.id, start=False)
    monitor.tick()
    panel = monitor.search_view.value
    assert panel.count("class='xt-stopped'") == 1 and panel.count("class='xt-trial'") == 5
    assert "1 stopped early" in panel and "run1.1: 9" in panel


def test_search_refusals_and_config(ip):
    with pytest.raises(JobError, match="dgd.*search bayesian, random or grid"):
        api.run_cell("x = 1\n", {}, hp={"a": [1, 2]}, search="dgd")
    with pytest.raises(JobError, match=r"bayesian search needs runs=N"):
        api.run_cell("x = 1\n", {}, hp={"a": "$uniform(0,1)"}, search="bayesian")
    with pytest.raises(JobError, match=r"search=bayesian needs hyperparameters \(hp or hp_config\)"):
        api.run_cell("x = 1\n", {}, search="bayesian", runs=3)
    cfg = session.get_session().config()
    assert search.search_type(cfg, None, {"a": [1, 2]}) is None  # the default keeps grid
    api.config_set({"hyperparameter-search.search-type": "bayesian",
                    "hyperparameter-search.max-runs": "2",
                    "general.primary-metric": "score"})
    job = api.run_cell("import xt_magic\nxt_magic.log(score=a)\n", {},
                       hp={"a": "$choice(1, 2, 3)"})
    assert job.record.search == "bayesian"
    job.wait(timeout=120, progress=False)
    history = job.search_history()
    assert len(history) == 2 and history["best"].iloc[-1] == max(history["value"])
    # a run that never logs the metric is a failed trial, not a good value
    job = api.run_cell("x = a\n", {}, hp={"a": "$choice(1, 2)"}, runs=1)
    job.wait(timeout=120, progress=False)
    lines = [ln for ln in _trial_lines(job.id) if "result" in ln]
    assert lines[0]["result"] == "fail" and lines[0]["reason"] == "never logged score"
    assert re.match(r"bayesian search on max score: 1/1 runs$", job.search_summary())
    assert job.states() == {"completed": 1}
    assert json.loads(json.dumps(job.record.extra["search"]))["objective"] == "last"


def test_bayesian_search_on_batch_keeps_its_job_open_until_the_search_ends(batch_config):
    """The driver adds each run to the job's one Batch job (one at a time: the job would have
    ended between runs if Batch terminated it after its tasks) and ends it when the search is
    over."""
    server = batch_config["server"]
    job = api.run_cell("import xt_magic\nxt_magic.log(score=-(a - 2) ** 2)\n", {},
                       hp={"a": "$randint(0,4)"}, search="bayesian", runs=3, concurrent=1,
                       metric="score", maximize=True)
    job.wait(timeout=120, progress=False)
    assert job.states() == {"completed": 3}, [job.info(r)["reason"] for r in job.runs]
    (bjob,) = server.jobs.values()
    assert sorted(bjob.tasks) == ["run1-1", "run1-2", "run1-3"]
    until(lambda: bjob.state == "completed", 30, "the Batch job to end")
    assert job.search_history()["best"].iloc[-1] == max(job.search_history()["value"])


def test_cancelling_a_search_stops_it():
    job = api.run_cell("import time\nprint('up', flush=True)\ntime.sleep(120)\n", {},
                       hp={"a": "$uniform(0,1)"}, search="bayesian", runs=5, concurrent=1,
                       metric="loss")
    until(lambda: job.refresh().runs and job.state("run1.1") == "running", 60, "run1.1 running")
    api.cancel(job.id)
    job.wait(timeout=60, progress=False)  # the driver records the cancelled trial and ends
    assert job.runs == ["run1.1"] and job.states() == {"cancelled": 1}
    assert job.status == "cancelled"
    lines = _trial_lines(job.id)
    assert [ln.get("result") for ln in lines if "result" in ln] == ["fail"]
    assert lines[-1] == {"done": True}


def test_preview_describes_the_search():
    preview = api.preview("x = 1\n", {}, hp={"a": "$uniform(0,1)"}, search="bayesian", runs=12,
                          concurrent=3, metric="acc", early_stop="bandit")
    text = repr(preview)
    assert text.startswith("preview: 0 run(s)")
    assert ("bayesian search: 12 run(s), 3 at a time, points chosen as results arrive; max acc "
            "(last value); early stopping: bandit from step 10, every 1") in text
    assert len(api.jobs()) == 0  # nothing submitted


@pytest.mark.sshd
def test_early_stop_on_a_pool_target(sshd_factory, xt_home):
    """The driver runs beside the kernel and stops a run on an SSH box through the pool backend."""
    from xt_magic.core.compute import ssh
    import yaml
    server = sshd_factory()
    config = {"boxes": {"b1": server.box(**{"max-runs": 2})},
              "compute-targets": {"pool": {"service": "pool", "boxes": ["b1"]}},
              "early-stopping": {"delay-evaluation": 2}}
    with open(os.environ["XT_USER_CONFIG"], "w") as fh:
        yaml.safe_dump(config, fh)
    server.trust(xt_home)
    try:
        job = api.run_cell(CURVES, {}, target="pool", hp={"c": [5, 0, 1]}, early_stop="median",
                           metric="loss", maximize=False)
        job.wait(timeout=100, progress=False)
        assert job.states() == {"cancelled": 1, "completed": 2}
        assert job.info("run1.1")["reason"] == "early stopped (median at step 2: 9 vs 0.9)"
    finally:
        ssh.close()
