"""The Python API (`import xt_magic as xt`, docs/api.md) on the real local target: functions as
jobs, hp dicts, preview apart from submitting, one return type, errors that name parameters while
the magics name flags, the config object."""
from __future__ import annotations

import pytest

import xt_magic as xt
from xt_magic.core.errors import ConfigError, JobError, RunFailed
from xt_magic.core.jobs.job import Job


def test_submit_a_function_returns_its_value():
    scale = 10

    def train(data, lr=0.1, *, layers=1):
        return {"score": sum(data) * lr * layers * scale}

    job = xt.submit(train, [1, 2, 3], layers=2)
    assert isinstance(job, Job) and job.record.name == train.__qualname__
    assert job.result(timeout=120) == {"score": pytest.approx(12.0)}


def test_submit_passes_each_runs_hyperparameters_as_keyword_arguments():
    def train(base, lr, wd=0.0):
        return base * lr + wd

    job = xt.submit(train, 100, hp={"lr": [1, 2, 3], "wd": 0.5}, wait=True)
    assert isinstance(job, Job) and job.done
    values = {r.hparams["lr"]: r.value for r in job.results()}
    assert values == {1: 100.5, 2: 200.5, 3: 300.5}
    with pytest.raises(JobError, match="has 3 runs: job.results"):
        job.result()


def test_submit_runs_a_bayesian_search_over_a_function():
    def objective(x):
        import xt_magic
        xt_magic.log(loss=(x - 3) ** 2)
        return x

    job = xt.submit(objective, hp={"x": "$uniform(0, 6)"}, search="bayesian", runs=4,
                    concurrent=2, metric="loss", maximize=False, seed=3, wait=True)
    assert job.states() == {"completed": 4}
    history = job.search_history()
    assert len(history) == 4 and history["best"].iloc[-1] == min(history["value"])
    assert sorted(r.value for r in job.results()) == sorted(history["hp.x"])


def test_a_function_that_raises_raises_run_failed_with_its_type():
    def boom(x):
        raise ValueError(f"bad x={x}")

    job = xt.submit(boom, 7)
    with pytest.raises(RunFailed, match="ValueError: bad x=7") as info:
        job.result(timeout=120)
    assert "boom" in info.value.remote_traceback


@pytest.mark.parametrize("call, msg", [
    (lambda f: xt.submit(f, 1, hp={"momentum": [0.9]}), r"^hp\['momentum'\]: .*f\(\) has no parameter"),
    (lambda f: xt.submit(f, 1, hp={"lr": [0.1]}, lr=0.2), r"^hp\['lr'\]: also given as the keyword"),
    (lambda f: xt.submit(f, 1, 2, 3), r"^.*f\(\): too many positional arguments"),
    (lambda f: xt.submit(f), r"^.*f\(\): missing a required argument: 'x'"),
    (lambda f: xt.submit(3), "^fn must be callable, got int"),
    (lambda f: xt.submit(f, 1, max_seconds=0), "^max_seconds must be >= 1"),
])
def test_submit_refuses_a_call_that_cannot_bind_and_submits_nothing(call, msg):
    def f(x, lr=0.1):
        return x * lr

    with pytest.raises(JobError, match=msg) as info:
        call(f)
    assert "\n" not in str(info.value)
    assert len(xt.jobs()) == 0


def test_a_cell_job_is_not_a_function_job():
    job = xt.run_cell("v = 1", outputs=["v"], wait=True)
    assert isinstance(job, Job) and job.results()["v"] == 1
    with pytest.raises(JobError, match="runs a cell, not a function"):
        job.result()


def test_run_cell_hp_dict_with_lists_distributions_and_constants():
    job = xt.run_cell("score = base * lr\n", {"base": 10},
                      hp={"lr": [1, 2], "wd": "$loguniform(1e-5, 1e-2)", "opt": "adam"},
                      search="grid", outputs=["score"], seed=3)
    assert isinstance(job, Job)  # not Results: wait=False
    res = job.wait(timeout=120, progress=False).results()
    assert sorted(res["score"].values()) == [10, 20]
    for r in res:
        assert r.hparams["opt"] == "adam" and 1e-5 <= r.hparams["wd"] <= 1e-2
    again = xt.preview("score = base * lr\n", {"base": 10},
                       hp={"lr": [1, 2], "wd": "$loguniform(1e-5, 1e-2)", "opt": "adam"},
                       search="grid", seed=3)
    assert again.points == [r.hparams for r in res]  # same seed, same draws


def test_preview_submits_nothing_and_run_cell_has_no_dry_run():
    preview = xt.preview("print(a)", {"a": 1}, hp={"k": [1, 2, 3]}, repeat=2)
    assert len(preview.points) == 6 and preview.inputs == ["a"]
    assert len(xt.jobs()) == 0
    with pytest.raises(TypeError):
        xt.run_cell("x = 1", dry_run=True)


def test_errors_name_parameters_in_the_api_and_flags_in_the_magics(ip):
    for call, api_msg in [
        (lambda: xt.run_cell("x = 1", max_seconds=0), "max_seconds must be >= 1"),
        (lambda: xt.run_cell("x = 1", hp={"lr": [1.0]}, runs=0), "runs must be >= 1"),
        (lambda: xt.run_cell("x = 1", inputs=["nope"]), "inputs: nope not defined"),
        (lambda: xt.run_cell("x = 1", env={"GITHUB_TOKEN": "x"}),
         "refusing to put a secret-looking variable in a job's environment: env GITHUB_TOKEN: "),
        (lambda: xt.jobs(last=0), "last must be >= 1"),
        (lambda: xt.run_cell("x = 1", env_secret=["NOPE_TOKEN"]),
         "env_secret NOPE_TOKEN: not given by env or"),
    ]:
        with pytest.raises(JobError) as info:
            call()
        text = str(info.value) + " " + (info.value.hint or "")
        assert str(info.value).startswith(api_msg) and "--" not in text, text
    for magic, line, flag_msg in [
        ("xt_run", "--max-seconds 0", "--max-seconds must be >= 1"),
        ("xt_run", "--hp lr=[1.0] --runs 0", "--runs must be >= 1"),
        ("xt_run", "--inputs nope", "--inputs: nope not defined"),
        ("xt_run", "--env GITHUB_TOKEN=x", "--env GITHUB_TOKEN: "),
        ("xt_run", "--env-secret NOPE_TOKEN", "--env-secret NOPE_TOKEN: not given by --env"),
        ("xt_run", "--hp lr=[0.1", "bad hyperparameter lr=[0.1"),
        ("xt_jobs", "--last 0", "--last must be >= 1"),
    ]:
        with pytest.raises(JobError) as info:
            if magic == "xt_run":
                ip.run_cell_magic(magic, line, "x = 1\n")
            else:
                ip.run_line_magic(magic, line)
        assert flag_msg in str(info.value), info.value
    with pytest.raises(JobError) as info:  # the flag naming ends with the magic's call
        xt.run_cell("x = 1", max_seconds=0)
    assert str(info.value).startswith("max_seconds")


def test_the_magic_gives_the_api_an_hp_dict(ip):
    ip.run_cell("base = 2")
    res = ip.run_cell_magic("xt_run", "--hp k=[1,2] w=$choice(5) --outputs y --wait",
                            "y = base * k + w")
    assert sorted(res["y"].values()) == [7, 9] and ip.user_ns["y"] == {"run1.1": 7, "run1.2": 9}


def test_config_object_gets_sets_and_shows():
    assert xt.config("xt-services.target") == "local"
    xt.config("general.username", "ada")
    assert xt.config["general.username"] == "ada"
    xt.config["general.workspace"] = "ws9"
    xt.config({"general.username": "bob"})
    assert xt.config("general.username") == "bob" and xt.config("general.workspace") == "ws9"
    assert "general" in str(xt.config())
    assert "ws9" in str(xt.config.explain("general.workspace"))
    with pytest.raises(ConfigError):
        xt.config["general.workspace"] = "a/../b"
    xt.config.reset()
    assert xt.config("general.username") != "bob"


def test_config_and_login_errors_name_parameters_and_their_magics_flags(ip, tmp_path):
    path = str(tmp_path / "t.yaml")
    xt.config.create("local", path)
    with pytest.raises(ConfigError) as info:
        xt.config.create("local", path)
    assert info.value.hint == "add force=True to replace it"
    with pytest.raises(ConfigError) as info:
        ip.run_line_magic("xt_config", f"--create local --path {path}")
    assert info.value.hint == "add --force to replace it"
    with pytest.raises(ConfigError, match="^unknown template 'nosuch'"):
        xt.config.create("nosuch")


def test_every_api_name_is_exported():
    from xt_magic.core import api
    for name in xt._API:
        assert getattr(xt, name) is getattr(api, name)
        assert name in dir(xt) and name in xt.__all__
    with pytest.raises(AttributeError):
        xt.no_such_thing  # noqa: B018


def test_hp_takes_tuples_ranges_and_numpy_values_as_plain_python():
    import numpy as np
    preview = xt.preview("x = 1", hp={"lr": np.linspace(0.1, 0.3, 3), "n": np.int64(4),
                                      "k": range(2), "act": ("relu", "tanh")})
    assert len(preview.points) == 3 * 2 * 2
    point = preview.points[-1]
    assert point == {"lr": 0.3, "n": 4, "k": 1, "act": "tanh"}
    assert {type(v) for v in point.values()} == {float, int, str}
