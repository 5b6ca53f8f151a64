"""An XT user's material runs unchanged (issue 12 parts 2, 4-7), end to end on the real local
target: XT-style training scripts (argparse + xtlib.run.Run), sweep files, config keys XT honoured,
checkpoints and resume, and the verbs XT users reach for. The material is written from the facts in
shared/reference/xt_config_sections.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from xt_magic.core import api, session
from xt_magic.core.errors import XTError

# An XT-style training script: argparse options with defaults, XT's run API, XT's environment.
TRAIN = textwrap.dedent('''\
    import argparse
    import os
    import sys

    import xtlib
    from xtlib import file_utils
    from xtlib.run import Run

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--note", default="")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    run = Run()
    run.log_hparams({"arch": "mlp", "optimizer": args.optimizer})
    under_xt = os.environ.get("XT_RUN_NAME")
    print("argv", sys.argv[1:])
    print("env", under_xt, os.environ["XT_JOB_ID"], os.environ["XT_WORKSPACE_NAME"],
          os.environ["XT_EXPERIMENT_NAME"], os.environ["XT_NODE_ID"])
    for epoch in range(1, args.epochs + 1):
        run.log_metrics({"epoch": epoch, "loss": args.lr / epoch, "acc": 0.5 + epoch * args.lr})
    run.log_metrics({"loss": 0.0}, stage="test")
    run.log_event("finished", {"epochs": args.epochs})
    run.tag_run({"kind": "baseline"})
    print("xtlib", xtlib.__version__)
    file_utils.write_text_file(os.path.join(os.environ["XT_OUTPUT_DIR"], "model.txt"),
                               f"lr={args.lr}")
    run.close()
''')

SWEEP = textwrap.dedent('''\
    hyperparameter-distributions:
      lr: [0.01, 0.02, 0.04]
      optimizer: [adam, sgd]
      batch-size: [6, 20]
      note: a, b, c
''')

# Preempted at epoch 2 unless resuming: the checkpoint (a dict and a file, as XT's samples keep
# them) says where to go on.
RESUMABLE = textwrap.dedent('''\
    import os
    import sys
    from xtlib import file_utils
    from xtlib.run import Run

    run = Run()
    fn_checkpoint = "checkpoints/model.txt"
    start = 1
    if run.resume_name:
        dd = run.get_checkpoint(fn_checkpoint)
        if dd and dd["epoch"]:
            start = dd["epoch"] + 1
            print("model", open(fn_checkpoint).read())
    print("resuming", run.is_resuming(), "start", start, os.environ.get("XT_RESUME_NAME"),
          flush=True)
    for epoch in range(start, 5):
        run.log_metrics({"epoch": epoch, "loss": 1.0 / epoch}, step_name="epoch")
        if run.store:
            file_utils.ensure_dir_exists(file=fn_checkpoint)
            with open(fn_checkpoint, "w") as fh:
                fh.write("weights@%d" % epoch)
            run.set_checkpoint({"epoch": epoch}, fn_checkpoint)
        if epoch == 2 and not run.is_resuming():
            sys.exit(7)
''')


def write(name: str, text: str) -> str:
    os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
    with open(name, "w") as fh:
        fh.write(text)
    return os.path.abspath(name)


def config(text: str) -> None:
    write("xt_config.yaml", textwrap.dedent(text))
    session.reset_session()


def console(run: str) -> str:
    import io
    buf = io.StringIO()
    api.logs(run, out=buf)
    return buf.getvalue()


def test_xt_training_script_sweep_with_run_api(ip):
    """`xt run train.py` with an hp-config sweep: each run's values reach argparse as
    --name=value, Run() metrics land in %xt_metrics with general.step-name, logged hparams show."""
    config("""\
        general:
          experiment: mnist-sweeps
          step-name: epoch
    """)
    write("train.py", TRAIN)
    write("sweep.yaml", SWEEP)
    res = ip.run_line_magic("xt_run", "train.py --epochs 3 --hp-config sweep.yaml --runs 3 --wait")
    job = res.job
    assert job.status == "completed" and len(job.runs) == 3
    assert job.record.experiment == "mnist-sweeps"
    for run, hp in zip(job.runs, job.record.hparams):
        text = console(run)
        # names as given (XT's hyphenated batch-size), a comma string as one constant value
        assert (f"argv ['--epochs', '3', '--lr={hp['lr']}', '--optimizer={hp['optimizer']}', "
                f"'--batch-size={hp['batch-size']}', '--note=a, b, c']") in text
        assert f"env {run} {job.id} ws1 mnist-sweeps node0" in text
        assert open(os.path.join(res[run].files_dir, "model.txt")).read() == f"lr={hp['lr']}"
        assert res[run].hparams["arch"] == "mlp"  # logged by the script: in the results table
    df = ip.run_line_magic("xt_metrics", job.id)
    main = df[df["loss"].notna() & df["acc"].notna()]
    assert len(main) == 9 and sorted(main["step"].unique()) == [1, 2, 3]
    assert list(main["epoch"]) == list(main["step"])  # step-name: epoch is the step
    assert set(df["hp.arch"]) == {"mlp"}
    assert sorted(set(df["hp.lr"])) == sorted({hp["lr"] for hp in job.record.hparams})
    assert "test-loss" in df.columns  # stage= prefixes the names
    assert api.plot(job.id, "loss").axes[0].get_xlabel() == "epoch"


def test_subprocess_and_worker_metrics_env_and_argv_in_a_cell(ip):
    """Metrics from any process of the run are recorded; XT's env is set; argparse defaults work
    in a cell; no launch secret in the environment a cell's child sees."""
    cell = textwrap.dedent('''\
        import argparse, json, multiprocessing, os, subprocess, sys
        import xt_magic
        parser = argparse.ArgumentParser()
        parser.add_argument("--depth", type=int, default=4)
        depth = parser.parse_args().depth
        child = ("import xt_magic\\nfrom xtlib.run import Run\\n"
                 "xt_magic.log(step=1, child_native=1.5)\\n"
                 "Run().log_metrics({'child_xt': 2.5, 'step': 1})\\n")
        subprocess.run([sys.executable, "-c", child], check=True)
        env_seen = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps("
                                   "dict(os.environ)))"], capture_output=True, text=True).stdout
        keys = sorted(json.loads(env_seen))
        ctx = multiprocessing.get_context("spawn")
        p = ctx.Process(target=xt_magic.log, kwargs={"step": 2, "worker": 3.5})
        p.start(); p.join()
        xt = {k: os.environ[k] for k in ("XT_RUN_NAME", "XT_JOB_ID", "XT_WORKSPACE_NAME",
                                         "XT_EXPERIMENT_NAME", "XT_OUTPUT_DIR", "XT_NODE_ID")}
        argv = list(sys.argv)
    ''')
    res = ip.run_cell_magic("xt_run", "--outputs depth,keys,xt,argv --wait", cell)
    run = res.runs_list[0]
    assert run.state == "completed", run
    assert res["depth"] == 4 and len(res["argv"]) == 1
    assert res["xt"]["XT_RUN_NAME"] == "run1.1" and res["xt"]["XT_JOB_ID"] == "job1"
    assert res["xt"]["XT_EXPERIMENT_NAME"] == "exper1"  # XT's default general.experiment
    assert not any(k.startswith("XT_LAUNCH") for k in res["keys"])
    df = api.metrics("job1")
    for name, value in (("child_native", 1.5), ("child_xt", 2.5), ("worker", 3.5)):
        assert list(df[name].dropna()) == [value], name


def test_commands_exit_codes_and_config_commands(ip):
    """%xt_run -- CMD (argv, no shell), hparams appended; a failing command fails the run with its
    exit code; a bare %xt_run runs the config's `commands` in order."""
    write("show.py", "import sys\nprint('got', sys.argv[1:])\n")
    job = ip.run_line_magic("xt_run", "--hp lr=[0.5] -- python show.py 'a b;' $HOME")
    job.wait(timeout=120, progress=False)
    assert job.status == "completed"
    assert "got ['a b;', '$HOME', '--lr=0.5']" in console(job.runs[0])

    bad = ip.run_line_magic("xt_run", "-- bash -c 'echo half; exit 3'")
    bad.wait(timeout=120, progress=False)
    info = api.status(bad.runs[0])
    assert info["state"] == "failed" and info["exit_code"] == 3
    assert "half" in console(bad.runs[0])

    config("""\
        commands:
          - python show.py first
          - bash -c "echo second > $XT_OUTPUT_DIR/second.txt"
    """)
    res = ip.run_line_magic("xt_run", "--wait")
    assert res.job.status == "completed"
    text = console(res.job.runs[0])
    assert text.index("got ['first']") < text.index("running: bash")
    assert os.path.exists(os.path.join(res.runs_list[0].files_dir, "second.txt"))

    config("hyperparameter-search: {option-prefix: null}\n")  # XT: no options generated
    res = ip.run_line_magic("xt_run", "--hp lr=[0.5] --wait -- python show.py --x=[1]")
    assert "got ['--x=[1]']" in console(res.job.runs[0])


def test_cancel_kills_a_script_and_its_children(ip, tmp_path):
    mark = "xt-child-" + os.path.basename(str(tmp_path))  # this test's processes only

    def alive():
        out = subprocess.run(["pgrep", "-f", mark], capture_output=True, text=True).stdout
        return [p for p in out.split() if _state(p) not in ("Z", None)]
    write("slow.py", "import subprocess, sys, time\n"
                     f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', "
                     f"'{mark}'])\nprint('slow started', flush=True)\ntime.sleep(300)\n")
    job = ip.run_line_magic("xt_run", "slow.py")
    from runner_helpers import wait_for
    wait_for(lambda: "slow started" in console(job.runs[0]) and alive(), what="script started")
    ip.run_line_magic("xt_cancel", job.id)
    assert api.status(job.runs[0])["state"] == "cancelled"
    wait_for(lambda: not alive(), what="the script's child gone")


def _state(pid: str):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_script_must_be_in_the_snapshot_and_options_after_double_dash(ip, tmp_path):
    outside = write(str(tmp_path / "elsewhere" / "t.py"), "print(1)\n")
    with pytest.raises(XTError, match="not in the code snapshot"):
        ip.run_line_magic("xt_run", outside)
    write("echo.py", "import sys\nprint('args', sys.argv[1:])\n")
    job = ip.run_line_magic("xt_run", "--name mine echo.py --x 1 --seed 5 --name n -- --runs 2")
    job.wait(timeout=120, progress=False)
    assert job.record.name == "mine" and len(job.runs) == 1
    assert "args ['--x', '1', '--seed', '5', '--name', 'n', '--runs', '2']" in console(job.runs[0])
    write("job.sh", "echo shell $1 $XT_RUN_NAME\n")
    job = ip.run_line_magic("xt_run", "job.sh hi --wait").job
    assert f"shell hi {job.runs[0]}" in console(job.runs[0])
    # XT's inline sweep among the script's options: one run per value
    job = ip.run_line_magic("xt_run", "echo.py --x 1 --lr=[0.1,0.2] --wait").job
    assert job.record.hparams == [{"lr": 0.1}, {"lr": 0.2}]
    assert "args ['--x', '1', '--lr=0.2']" in console(job.runs[1])


def test_requeued_run_resumes_from_its_checkpoint(ip):
    """A preempted run restarted with the same ticket (Batch/Slurm requeue) starts with
    is_resuming() true and its last checkpoint; so does %xt_rerun --resume RUN."""
    write("resumable.py", RESUMABLE)
    job = ip.run_line_magic("xt_run", "resumable.py")
    job.wait(timeout=120, progress=False)
    assert api.status(job.runs[0])["exit_code"] == 7
    assert "resuming False start 1 None" in console(job.runs[0])

    again = ip.run_line_magic("xt_rerun", f"{job.runs[0]} --resume --wait")
    assert again.job.status == "completed" and again.job.id == "job2", console("run2.1")
    assert "model weights@2\nresuming True start 3 run1.1" in console(again.job.runs[0])
    assert list(api.metrics("job2")["step"]) == [3, 4]

    # the same run started again from its stored ticket, as a requeue does
    from xt_magic.core.jobs.context import _Ctx
    from xt_magic.core.protocol import tickets
    from xt_magic.runner import runner
    ctx = _Ctx(session.get_session())
    ticket_path = ctx.store.local_path(ctx.layout.ticket(job.runs[0]))
    ticket = json.loads(open(ticket_path).read())
    env = dict(os.environ, XT_LAUNCH=json.dumps(tickets.relaunch(ctx.store, ticket)))
    subprocess.run([sys.executable, runner.__file__, ticket_path], env=env, check=True,
                   capture_output=True, timeout=120)
    assert "resuming True start 3 run1.1" in console(job.runs[0])
    assert list(api.metrics("job1")["step"]) == [1, 2, 3, 4]


def test_native_checkpoint_and_restore_in_a_cell(ip):
    cell = ("import xt_magic\nstate = xt_magic.restore({'n': 0})\nstate['n'] += 1\n"
            "xt_magic.checkpoint(state)\nn = state['n']\nassert n == 2, n\n")
    job = ip.run_cell_magic("xt_run", "--outputs n", cell)
    job.wait(timeout=120, progress=False)
    assert job.status == "failed"
    res = ip.run_line_magic("xt_rerun", "job1 --resume --wait")
    assert res["n"] == 2


def test_config_keys_xt_honoured(ip):
    """hyperparameter-search applies with no sweep option; data download sets XT_DATA_DIR;
    after-files brings back more than the output dir; general.experiment is filterable."""
    store = api.config_get("external-services")  # the file store of the default config
    assert store
    from xt_magic.core.storage import get_store
    st = get_store(session.get_session())
    st.write_bytes("datasets/toy/train.csv", b"x,y\n1,2\n")
    st.write_bytes("datasets/toy/sub/more.csv", b"3,4\n")
    write("sweep.yaml", SWEEP)
    write("data_job.py", textwrap.dedent('''\
        import os, sys
        root = os.environ["XT_DATA_DIR"]
        print("data", sorted(os.listdir(root)), open(os.path.join(root, "sub", "more.csv")).read())
        os.makedirs("logs", exist_ok=True)
        open("logs/train.log", "w").write("trained " + " ".join(sys.argv[1:]))
    '''))
    config("""\
        general:
          experiment: exp-a
        hyperparameter-search:
          hp-config: sweep.yaml
          search-type: grid
          max-runs: 4
        after-files:
          after-dirs: ["output/**", "logs/**"]
        data:
          data-action: mount
          data-share-path: datasets/toy
    """)
    res = ip.run_line_magic("xt_run", "data_job.py --wait")
    assert len(res.job.runs) == 4 and res.job.record.search == "grid"  # of 12, max-runs: 4
    first = res.runs_list[0]
    assert first.state == "completed"
    assert "data ['sub', 'train.csv'] 3,4" in console(first.run)
    assert open(os.path.join(first.files_dir, "logs", "train.log")).read().startswith(
        "trained --lr=")
    # XT's quick-test config names a share path with nothing in this store: an empty data dir
    config("""\
        data: {data-action: mount, data-share-path: mnist}
        model: {model-action: download, model-share-path: miniMnist}
    """)
    write("dirs.py", "import os\nfor k in ('XT_DATA_DIR', 'XT_MODEL_DIR'):\n"
                     "    print(k, os.listdir(os.environ[k]))\n")
    job = ip.run_line_magic("xt_run", "dirs.py --wait").job
    assert "XT_DATA_DIR []" in console(job.runs[0]) and "XT_MODEL_DIR []" in console(job.runs[0])
    # general.experiment recorded and filterable
    config("general:\n  experiment: exp-b\n")
    ip.run_cell_magic("xt_run", "--wait", "x = 1")
    assert list(ip.run_line_magic("xt_jobs", "--experiment exp-a")["job"]) == ["job1"]
    runs = ip.run_line_magic("xt_runs", "--experiment exp-b")
    assert list(runs["run"]) == ["run3.1"] and list(runs["experiment"]) == ["exp-b"]


def test_verbs_runs_tag_rerun_cancel_all(ip):
    write("train.py", TRAIN)
    config("general:\n  primary-metric: acc\n  maximize-metric: true\n")
    ip.run_line_magic("xt_run", "train.py --epochs 2 --hp lr=[0.1,0.3,0.2] --wait")
    df = ip.run_line_magic("xt_runs", "--sort acc --top 2")
    assert list(df["run"]) == ["run1.2", "run1.3"]  # best acc first
    assert list(df["hp.lr"]) == [0.3, 0.2] and "best.acc" in df.columns
    assert list(df["best.acc"]) == [pytest.approx(1.1), pytest.approx(0.9)]
    assert set(df["hp.arch"]) == {"mlp"} and df["tags"].iloc[0]["kind"] == "baseline"
    assert list(ip.run_line_magic("xt_runs", "--status failed")["run"]) == []

    assert ip.run_line_magic("xt_tag", "job1 owner=ana stage=dev") == {"owner": "ana",
                                                                    "stage": "dev"}
    ip.run_line_magic("xt_tag", "run1.3 pick=yes urgent")
    assert list(ip.run_line_magic("xt_runs", "--tag pick=yes")["run"]) == ["run1.3"]
    assert list(ip.run_line_magic("xt_runs", "--tag urgent")["run"]) == ["run1.3"]  # bare tag
    assert len(ip.run_line_magic("xt_runs", "--tag owner=ana")) == 3

    res = ip.run_line_magic("xt_rerun", "run1.3 --wait")
    assert res.job.id == "job2" and res.job.record.hparams == [{"lr": 0.2}]
    assert res.job.record.extra["rerun_of"] == "job1"
    assert "--lr=0.2" in console("run2.1")
    res = ip.run_line_magic("xt_rerun", "job1 --hp lr=[0.7] --wait")
    assert res.job.record.hparams == [{"lr": 0.7}] and res.job.record.tags["owner"] == "ana"

    jobs = ip.run_line_magic("xt_jobs", "--tag owner=ana")
    # a rerun keeps the job's tags (job2 was made after the tagging too)
    assert list(jobs["job"]) == ["job1", "job2", "job3"] and jobs["tags"].iloc[0]["stage"] == "dev"

    slow = ip.run_cell_magic("xt_run", "", "import time\ntime.sleep(300)\n")
    slow2 = ip.run_cell_magic("xt_run", "", "import time\ntime.sleep(300)\n")
    assert sorted(ip.run_line_magic("xt_cancel", "--all")) == [slow.id, slow2.id]
    assert api.status(slow.id).status == "cancelled"
    assert api.status(slow2.id).status == "cancelled"
    assert ip.run_line_magic("xt_cancel", "--all --target local") == []


#: Keys XT honoured that now take effect (issue 12 part 2): `%xt_config --validate` must not
#: call them unused or without effect.
EFFECTIVE = ["general.experiment", "general.primary-metric", "general.maximize-metric",
             "general.step-name", "after-files.after-dirs", "after-files.after-upload",
             "after-files.after-omit", "data.data-share-path", "data.data-action",
             "data.data-omit", "model.model-share-path", "model.model-action",
             "hyperparameter-search.option-prefix", "hyperparameter-search.search-type",
             "hyperparameter-search.hp-config", "hyperparameter-search.max-runs", "commands"]


def test_keys_with_effect_are_not_reported_unused():
    import yaml
    from xt_magic.core.config import loader
    path = os.path.join(os.path.dirname(loader.__file__), "schema.yaml")
    schema = yaml.safe_load(open(path))
    for key in EFFECTIVE:
        node = schema
        for part in key.split("."):
            node = node["properties"][part]
        assert not node.get("x-unused") and not node.get("x-no-effect"), key


def test_rerun_takes_only_what_the_run_signed(ip):
    """%xt_rerun re-reads code from the store: a store writer's edits to job.json's commands or
    the bundle's cell are refused, not signed into a new job."""
    write("echo.py", "print('ok')\n")
    job = ip.run_line_magic("xt_run", "echo.py --wait").job
    from xt_magic.core.jobs.context import _Ctx
    ctx = _Ctx(session.get_session())
    path = ctx.layout.job_json(job.id)
    record = json.loads(ctx.store.read_bytes(path))
    record["extra"]["commands"][0]["argv"] = ["-c", "print('planted')"]
    ctx.store.write_bytes(path, json.dumps(record).encode())
    with pytest.raises(XTError, match="not what its run signed"):
        ip.run_line_magic("xt_rerun", job.id)
    cell_job = ip.run_cell_magic("xt_run", "--wait", "x = 1").job
    ctx.store.write_bytes(ctx.layout.bundle(cell_job.id, "cell.py"), b"print('planted')")
    with pytest.raises(XTError, match="not what its run signed"):
        ip.run_line_magic("xt_rerun", cell_job.id)
    assert [r for r in api.jobs()["job"]] == [job.id, cell_job.id]  # nothing submitted


def test_a_planted_checkpoint_is_refused(ip):
    """Checkpoints carry the job key's signature: a store writer's edit is refused by
    %xt_rerun --resume and ignored by a requeued run (no planted pickle or dict is loaded)."""
    write("resumable.py", RESUMABLE)
    job = ip.run_line_magic("xt_run", "resumable.py")
    job.wait(timeout=120, progress=False)
    from xt_magic.core.jobs.context import _Ctx
    from xt_magic.core.protocol import tickets
    from xt_magic.runner import runner
    ctx = _Ctx(session.get_session())
    path = ctx.layout.checkpoint(job.runs[0], "dict_cp.json")
    blob = ctx.store.read_bytes(path)
    assert blob.startswith(b"XTCK1 ") and blob.endswith(b'{"epoch": 2}')
    ctx.store.write_bytes(path, blob.split(b"\n", 1)[0] + b'\n{"epoch": 3}')
    with pytest.raises(XTError, match="checkpoint dict_cp.json does not verify"):
        ip.run_line_magic("xt_rerun", f"{job.runs[0]} --resume")
    ticket_path = ctx.store.local_path(ctx.layout.ticket(job.runs[0]))
    ticket = json.loads(open(ticket_path).read())
    env = dict(os.environ, XT_LAUNCH=json.dumps(tickets.relaunch(ctx.store, ticket)))
    subprocess.run([sys.executable, runner.__file__, ticket_path], env=env,
                   capture_output=True, timeout=120)
    text = console(job.runs[0])
    assert "checkpoint dict_cp.json does not verify: ignored" in text
    assert "start 3" not in text
