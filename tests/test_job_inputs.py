"""What goes into a job, end to end on the local target: the environment is an allowlist (no
kernel credential reaches a run), XT sweep files with hyphenated names reach the cell as ``hp``
plus identifier aliases, and bad sweeps, ids and home-directory snapshots are one-line errors."""
from __future__ import annotations

import pytest

from xt_magic.core import api
from xt_magic.core.errors import JobError, XTError

KERNEL_SECRETS = {
    "AZURE_BATCH_KEY": "canary-batch-key-1", "AZURE_OPENAI_API_KEY": "canary-openai-2",
    "GITHUB_TOKEN": "canary-gh-3", "HF_TOKEN": "canary-hf-4", "WANDB_API_KEY": "canary-wandb-5",
    "DATABASE_URL": "postgres://u:canary-pw-6@h/db",
}
DUMP_ENV = "import os\nenv = dict(os.environ)\nprint(sorted(os.environ.items()))\n"


def _console(job) -> str:
    from xt_magic.core.jobs.context import _Ctx
    ctx = _Ctx(job.session)
    return ctx.store.read_bytes(ctx.layout.run(job.runs[0], "console.txt")).decode()


def test_kernel_credentials_never_reach_a_local_job(ip, monkeypatch):
    for name, value in KERNEL_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("SOME_TOOL_SETTING", "kernel only")
    res = ip.run_cell_magic("xt_run", "--outputs env --wait --env MY_SETTING=1", DUMP_ENV)
    env = res["env"]
    console = _console(api.job("job1"))
    assert env["OMP_NUM_THREADS"] == "3" and env["MY_SETTING"] == "1"
    assert env["XT_RUN_ID"] == "run1.1" and "PATH" in env
    assert "SOME_TOOL_SETTING" not in env  # an allowlist, not a denylist
    for name, value in KERNEL_SECRETS.items():
        assert name not in env and value not in console, name


def test_explicit_secret_env_is_refused_unless_marked(ip, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "canary-hf-kernel")
    for line in ("--env GITHUB_TOKEN=x", "--env DATABASE_URL=postgres://u:pw@h/db",
                 "--env A=1 AZURE_BATCH_KEY=k"):
        with pytest.raises(JobError, match="refusing to put a secret-looking variable") as info:
            ip.run_cell_magic("xt_run", line, DUMP_ENV)
        assert "\n" not in str(info.value) and "--env-secret" in str(info.value)
        assert "pw" not in str(info.value) and "=x" not in str(info.value)
    ip.run_line_magic("xt_config", '"general.env-vars={MY_PASSWORD: p}"')
    with pytest.raises(JobError, match="general.env-vars MY_PASSWORD"):
        ip.run_cell_magic("xt_run", "", DUMP_ENV)
    ip.run_line_magic("xt_config", '"general.env-vars={}"')
    res = ip.run_cell_magic(
        "xt_run", "--outputs env --wait --env GITHUB_TOKEN=x --env-secret GITHUB_TOKEN HF_TOKEN",
        DUMP_ENV)
    assert res["env"]["GITHUB_TOKEN"] == "x" and res["env"]["HF_TOKEN"] == "canary-hf-kernel"
    with pytest.raises(JobError, match="--env-secret NOPE_TOKEN: not given"):
        ip.run_cell_magic("xt_run", "--env-secret NOPE_TOKEN", DUMP_ENV)


def test_xt_sweep_file_reaches_the_cell(ip, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("hyperparameter-distributions:\n  batch-size: [16, 32]\n"
                     "  weight-decay: 0.01\n  optimizer: adam, sgd\n  lambda: 2\n"
                     "  log-interval: 5\n  log_interval: 7\n")
    res = ip.run_cell_magic(
        "xt_run", f"--hp-config {sweep} --outputs got --wait",
        "got = (hp['batch-size'], batch_size, weight_decay, optimizer, hp['lambda'],\n"
        "       hp['log-interval'], log_interval, sorted(hp))\n")
    got = sorted(res["got"].values()) if isinstance(res["got"], dict) else None
    names = sorted(["batch-size", "weight-decay", "optimizer", "lambda", "log-interval",
                    "log_interval"])
    # log_interval is a name of its own: log-interval gets no alias (it would be ambiguous)
    assert got == [(16, 16, 0.01, "adam, sgd", 2, 5, 7, names),
                   (32, 32, 0.01, "adam, sgd", 2, 5, 7, names)]
    record = api.job("job1").record
    assert record.hparams[0] == {"batch-size": 16, "weight-decay": 0.01, "optimizer": "adam, sgd",
                                 "lambda": 2, "log-interval": 5, "log_interval": 7}


def test_bad_sweeps_and_ids_are_one_line(ip):
    for line in ("--hp lr=$lognormal(800,0) --runs 1", "--hp lr=$linspace(0,1,1e999)",
                 "--hp lr=$quniform(0,1e308,1e-308) --runs 2",
                 "--dry-run --hp lr=$linspace(0,1,30000000)"):
        with pytest.raises(JobError) as info:
            ip.run_cell_magic("xt_run", line, "x = lr")
        assert "\n" not in str(info.value), line
    assert "max-runs-limit" in str(info.value)
    ip.run_line_magic("xt_config", "hyperparameter-search.max-runs-limit=3")
    with pytest.raises(JobError, match="4 runs, over the limit of 3"):
        ip.run_cell_magic("xt_run", "--hp a=[1,2] b=[1,2]", "x = a")
    for bad in ("1" * 5000, "job" + "9" * 4400, "run" + "1" * 4400 + ".1"):
        for verb in (api.status, api.cancel, api.logs):
            with pytest.raises(XTError, match="is not a job or run id") as info:
                verb(bad)
            assert len(str(info.value)) < 200


def test_preview_lists_what_the_snapshot_leaves_out(ip, tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / ".ssh").mkdir(parents=True)
    (proj / ".ssh" / "id_rsa").write_text("key")
    (proj / ".env").write_text("TOKEN=1")
    (proj / "train.py").write_text("print(1)")
    monkeypatch.chdir(proj)
    from xt_magic.core import session
    session.reset_session()
    text = repr(ip.run_cell_magic("xt_run", "--dry-run", "x = 1"))
    assert "train.py" in text and "left out: 2" in text
    assert ".ssh/  (may hold a secret: .ssh/)" in text and ".env  (may hold a secret: .env)" in text
    monkeypatch.setenv("HOME", str(proj))
    with pytest.raises(JobError, match="home directory: refusing to snapshot it"):
        ip.run_cell_magic("xt_run", "", "x = 1")
