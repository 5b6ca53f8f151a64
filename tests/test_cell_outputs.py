"""A cell runs on the node as a notebook cell: its outputs come back as nbformat outputs.

Runner level (hand-built tickets): outputs.jsonl records, the run notebook, the output cap, the
path without IPython on the node. The kernel side (live outputs with --wait, red cells, sweeps)
is driven through real kernels further down.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import nbformat
from pathlib import Path

from runner_helpers import RUNNER, events, launch_env, make_job, read


def _run(root, cell, python=sys.executable, args=(), env=None, **kw):
    [(run, tp, t)] = make_job(root, cell, capture_bytes=kw.pop("capture_bytes", 20 << 20), **kw)
    p = subprocess.run([python, *args, RUNNER, tp], capture_output=True, text=True, timeout=120,
                       env={**launch_env(tp), **(env or {})})
    final = events(root, t)[-1]
    records = [json.loads(line) for line in read(root, t["paths"]["outputs"]).splitlines()]
    return p, t, final, records


def _notebook(root, t, final):
    """A cell run writes no run.ipynb: its notebook is built (as the kernel does) from the
    ticket, the cell, the outputs and the final event's ``notebook`` fields."""
    from xt_magic.runner.runner import run_notebook
    assert not (root / t["paths"]["notebook"]).exists()
    raw = read(root, t["paths"]["outputs"])
    assert hashlib.sha256(raw).hexdigest() == final["outputs_sha256"]
    made = final["notebook"]
    nb = nbformat.from_dict(json.loads(json.dumps(run_notebook(
        t, read(root, t["bundle"]["cell"]).decode(), made["inputs"],
        [json.loads(line) for line in raw.splitlines()], final["state"], made["python"]))))
    nbformat.validate(nb)
    return nb


RICH_CELL = """\
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
for i in range(3):
    print("step", i)
display(Markdown("**bold** move"))
plt.plot([1, 2, 3])
plt.show()
!echo from-shell
df = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
df.describe()
"""


def test_rich_outputs_in_order_and_run_notebook(tmp_path):
    root = tmp_path / "store"
    p, t, final, recs = _run(root, RICH_CELL, hparams={"lr": 0.1}, inputs={"a": 1})
    assert p.returncode == 0, read(root, t["paths"]["console"])
    raw = read(root, t["paths"]["outputs"])
    assert hashlib.sha256(raw).hexdigest() == final["outputs_sha256"]
    kinds = [(r["output_type"], sorted(r.get("data", {}))) for r in recs]
    assert kinds == [("stream", []), ("display_data", ["text/markdown", "text/plain"]),
                     ("display_data", ["image/png", "text/plain"]), ("stream", []),
                     ("execute_result", ["text/html", "text/plain"])]
    assert recs[0]["text"] == "step 0\nstep 1\nstep 2\n"
    assert recs[1]["data"]["text/markdown"] == "**bold** move"
    assert recs[2]["data"]["image/png"].startswith("iVBORw0KGgo")  # base64 of a PNG header
    assert "from-shell" in recs[3]["text"]
    assert "<table" in recs[4]["data"]["text/html"] and "mean" in recs[4]["data"]["text/plain"]
    console = read(root, t["paths"]["console"]).decode()
    assert "step 2" in console  # the console keeps every line as before
    nb = _notebook(root, t, final)
    params, cell = nb.cells
    assert params.metadata.tags == ["parameters"] and "lr = 0.1" in params.source
    assert "# inputs (values from the submitting kernel): a\n" in params.source + "\n"
    assert cell.source == RICH_CELL
    assert [o.output_type for o in cell.outputs] == [
        "stream", "display_data", "display_data", "stream", "execute_result"]


def test_error_is_an_error_output_and_failed_event(tmp_path):
    root = tmp_path / "store"
    cell = "print('before')\ndef f():\n    raise ValueError('bad value')\nf()\n"
    p, t, final, recs = _run(root, cell)
    assert p.returncode == 1 and final["state"] == "failed"
    assert [r["output_type"] for r in recs] == ["stream", "error"]
    err = recs[1]
    assert (err["ename"], err["evalue"]) == ("ValueError", "bad value")
    assert err["traceback"][1].startswith('  File "<xt_run cell>", line 4')
    assert final["outputs_sha256"] == hashlib.sha256(read(root, t["paths"]["outputs"])).hexdigest()
    nb = _notebook(root, t, final)
    assert nb.metadata.xt.state == "failed" and nb.cells[1].outputs[-1].ename == "ValueError"


def test_outputs_capped_with_a_note_and_figure_loop(tmp_path):
    root = tmp_path / "store"
    cell = ("import matplotlib.pyplot as plt\n"
            "for i in range(500):\n"
            "    plt.figure(figsize=(1, 1)); plt.plot([i, 0]); plt.show()\n"
            "print('done')\n")
    cap = 200_000
    p, t, final, recs = _run(root, cell, capture_bytes=cap)
    assert p.returncode == 0, read(root, t["paths"]["console"])
    raw = read(root, t["paths"]["outputs"])
    figures = [r for r in recs if r["output_type"] == "display_data"]
    assert 10 < len(figures) < 500 and len(raw) < cap + 1000
    assert "outputs cut here" in recs[-1]["text"] and recs[-1]["name"] == "stderr"
    assert "done" in read(root, t["paths"]["console"]).decode()  # the console is not capped


def _python_without_ipython(tmp_path):
    """The venv's python with -S and a PYTHONPATH holding its packages minus IPython."""
    import site
    farm = tmp_path / "site-no-ipython"
    farm.mkdir()
    for sp in site.getsitepackages():
        for name in os.listdir(sp):
            if not name.lower().startswith(("ipython", "ipykernel", "xt_magic", "__editable__")) \
                    and not (farm / name).exists():
                (farm / name).symlink_to(os.path.join(sp, name))
    env = dict(os.environ, PYTHONPATH=str(farm))
    return ["-S"], env


def test_node_without_ipython_still_captures_value_prints_and_figures(tmp_path):
    args, env = _python_without_ipython(tmp_path)
    root = tmp_path / "store"
    cell = ("import importlib.util, matplotlib.pyplot as plt\n"
            "assert importlib.util.find_spec('IPython') is None\n"
            "class Rich:\n"
            "    def _repr_html_(self): return '<b>rich</b>'\n"
            "    def __repr__(self): return 'Rich()'\n"
            "print('hello')\n"
            "display(Rich())\n"
            "plt.plot([1, 2]); plt.show()\n"
            "x = 21\n"
            "x * 2\n")
    p, t, final, recs = _run(root, cell, args=args, env=env)
    assert p.returncode == 0, read(root, t["paths"]["console"])
    assert [r["output_type"] for r in recs] == ["stream", "display_data", "display_data",
                                                "execute_result"]
    assert recs[1]["data"] == {"text/html": "<b>rich</b>", "text/plain": "Rich()"}
    assert "image/png" in recs[2]["data"]
    assert recs[3]["data"] == {"text/plain": "42"}
    _notebook(root, t, final)


# ------------------------------------------------------------------ in a kernel (nbclient)
def _notebook_of(*cells):
    from nbformat.v4 import new_code_cell, new_notebook
    return new_notebook(cells=[new_code_cell(c) for c in cells])


def _kinds(cell):
    return [(o.output_type, sorted(o.get("data", {})) or o.get("name")) for o in cell.outputs]


def test_wait_cells_show_remote_outputs_and_the_raising_cell_stops_the_notebook():
    import pytest
    from nbclient.exceptions import CellExecutionError
    from test_notebooks import execute
    nb = _notebook_of(
        "%load_ext xt_magic",
        "%%xt_run --wait\nimport pandas as pd\ndf = pd.DataFrame({'x': [1.0, 2.0, 3.0]})\n"
        "df.describe()",
        "%%xt_run --wait\nx = 21\nx * 2",
        "%%xt_run --wait\nfor i in range(3):\n    print('line', i)",
        "%%xt_run --wait\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
        "%%xt_run --wait\nfrom IPython.display import Markdown, display\n"
        "display(Markdown('# remote *markdown*'))",
        "%%xt_run --wait\nfrom IPython.display import clear_output\nprint('gone')\n"
        "clear_output()\nprint('kept')",
        "%%xt_run --wait\nprint('about to fail')\nraise ValueError('remote bad value')",
        "print('never reached')")
    with pytest.raises(CellExecutionError) as info:
        execute(nb, Path.cwd(), timeout=180)
    assert "remote bad value" in str(info.value)
    describe, double, loop, figure, markdown, cleared, failing, after = nb.cells[1:]
    texts = "".join(o.get("text", "") for o in cleared.outputs)
    assert "kept" in texts and "gone" not in texts
    html = [o for o in describe.outputs if "text/html" in o.get("data", {})]
    assert html and "<table" in html[0].data["text/html"] and "mean" in html[0].data["text/plain"]
    assert any(o.get("data", {}).get("text/plain") == "42" for o in double.outputs)
    streams = "".join(o.text for o in loop.outputs if o.output_type == "stream")
    assert "line 0\nline 1\nline 2\n" in streams
    pngs = [o for o in figure.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1 and "Figure" not in "".join(o.get("text", "") for o in figure.outputs)
    md = [o for o in markdown.outputs if "text/markdown" in o.get("data", {})]
    assert md and md[0].data["text/markdown"] == "# remote *markdown*"
    assert "about to fail" in "".join(o.get("text", "") for o in failing.outputs)
    [err] = [o for o in failing.outputs if o.output_type == "error"]
    assert err.ename == "RunFailed" and "ValueError" in err.evalue
    assert "remote bad value" in "\n".join(err.traceback)
    assert after.outputs == []  # Run All stopped at the red cell


def test_sweep_outputs_grouped_no_raise_and_run_notebooks(tmp_path):
    import nbformat
    from test_notebooks import execute
    nb = _notebook_of(
        "%load_ext xt_magic",
        "%%xt_run --hp lr=[1,2,3,4] --wait --no-raise\nprint('lr is', lr)\n"
        "if lr == 3:\n    raise ValueError('three')\nlr * 10",
        "from xt_magic.core import api\njob = api.job('job1')\nnb = job.notebook('run1.2')\n"
        "print(nb.cells[0].source)\nprint(nb.cells[1].outputs[-1]['data']['text/plain'])",
        f"%xt_results job1 --notebooks {tmp_path / 'nbs'}")
    execute(nb, Path.cwd(), timeout=180)
    groups = [o.data["text/html"] for o in nb.cells[1].outputs
              if "xt-run-outputs" in o.get("data", {}).get("text/html", "")]
    assert len(groups) == 4
    by_run = {g.split("data-run='")[1].split("'")[0]: g for g in groups}
    assert "lr=2" in by_run["run1.2"] and "lr is 2" in by_run["run1.2"] and "20" in by_run["run1.2"]
    assert "three" in by_run["run1.3"] and "(failed)" in by_run["run1.3"]
    assert by_run["run1.1"].startswith("<details open") and not by_run["run1.4"].startswith(
        "<details open")  # beyond the first few: collapsed
    text = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert "lr = 2" in text and "20" in text
    shown = [o.data["text/html"] for o in nb.cells[3].outputs if "text/html" in o.get("data", {})]
    assert shown and shown[0].count("xt-run-outputs") == 4 and "lr is 4" in shown[0]
    saved = sorted(os.listdir(tmp_path / "nbs"))
    assert saved == ["run1.1.ipynb", "run1.2.ipynb", "run1.3.ipynb", "run1.4.ipynb"]
    run3 = nbformat.read(tmp_path / "nbs" / "run1.3.ipynb", as_version=4)
    nbformat.validate(run3)
    assert run3.cells[1].outputs[-1].output_type == "error"
    assert "lr = 3" in run3.cells[0].source


def test_cell_run_notebook_is_built_from_what_verifies(tmp_path):
    """No run.ipynb per cell run: job.notebook builds it from the signed ticket, the cell
    (checked against the ticket) and the checked outputs; a changed cell or output is refused."""
    import pytest
    from xt_magic.core import api
    from xt_magic.core.errors import JobError
    job = api.run_cell("print('hi', lr)\nlr * 10", {"__name__": "__main__", "a": 1},
                       hp={"lr": [2]}, inputs=["a"], wait=True)
    run = job.runs[0]
    store = job._ctx().store
    ws = job.record.workspace
    assert not store.exists(f"{ws}/runs/{run}/run.ipynb")
    nb = job.notebook(run)
    assert nb.cells[0].source.splitlines()[1:] == [
        "lr = 2", "hp = {'lr': 2}", "# inputs (values from the submitting kernel): a"]
    assert nb.metadata.xt.state == "completed" and nb.metadata.xt.hparams == {"lr": 2}
    assert nb.metadata.language_info.version == "%d.%d.%d" % sys.version_info[:3]
    assert [o.output_type for o in nb.cells[1].outputs] == ["stream", "execute_result"]
    assert nb.cells[1].outputs[1].data["text/plain"] == "20"
    cell_path = f"{ws}/jobs/{job.id}/bundle/cell.py"
    good = store.read_bytes(cell_path)
    store.write_bytes(cell_path, b"import os; os.system('evil')")
    with pytest.raises(JobError, match="does not match the checksum its ticket signed"):
        job.notebook(run)
    store.write_bytes(cell_path, good)
    out_path = f"{ws}/runs/{run}/outputs.jsonl"
    store.write_bytes(out_path, store.read_bytes(out_path).replace(b"hi 2", b"ho 2"))
    with pytest.raises(JobError, match="does not verify"):
        job.notebook(run)


# ------------------------------------------------------------------------- notebooks as jobs
def _train_notebook(path, last="print('final', lr * steps)"):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    nb = new_notebook(cells=[
        new_markdown_cell("# train"),
        new_code_cell("lr = 0.5\nsteps = 3", metadata={"tags": ["parameters"]}),
        new_code_cell("import xt_magic\nfor s in range(steps):\n"
                      "    xt_magic.log(step=s, loss=lr / (s + 1))"),
        new_code_cell(last)])
    nbformat.write(nb, str(path))
    return path


def test_notebook_job_sweep_injects_values_and_keeps_executed_notebooks(tmp_path, ip):
    from xt_magic.core import api
    path = _train_notebook(tmp_path / "train.ipynb")
    res = ip.run_line_magic("xt_run", f"--notebook {path} --hp lr=[0.1,0.2] --wait")
    assert [r.state for r in res] == ["completed", "completed"]
    job = api.job("job1")
    assert job.record.name == "train.ipynb"
    for run, lr in (("run1.1", 0.1), ("run1.2", 0.2)):
        nb = job.notebook(run)
        nbformat.validate(nb)
        injected = nb.cells[2]
        assert injected.metadata.tags == ["injected-parameters"] and f"lr = {lr}" in injected.source
        assert nb.cells[-1].outputs[0].text == f"final {lr * 3}\n"
    metrics = api.metrics("job1")
    assert sorted(metrics[metrics["run"] == "run1.2"]["loss"].dropna()) == [0.2 / 3, 0.1, 0.2]


def test_notebook_job_failing_cell_fails_with_its_index(tmp_path):
    from xt_magic.core import api
    from xt_magic.core.errors import RunFailed
    import pytest
    path = _train_notebook(tmp_path / "bad.ipynb", last="raise KeyError('nope')")
    with pytest.raises(RunFailed) as info:
        api.submit_notebook(str(path), parameters={"steps": 1}, wait=True, raise_errors=True)
    assert "cell 3" in str(info.value) and "KeyError" in str(info.value)
    assert "raise KeyError('nope')" in info.value.remote_traceback
    nb = api.job("job1").notebook()
    assert "steps = 1" in nb.cells[2].source and nb.cells[-1].outputs[-1].ename == "KeyError"


def test_notebook_job_without_ipykernel_on_node_is_one_clear_line(tmp_path):
    args, env = _python_without_ipython(tmp_path)
    root = tmp_path / "store"
    nb = nbformat.writes(nbformat.read(str(_train_notebook(tmp_path / "t.ipynb")), 4))
    [(run, tp, t)] = make_job(root, nb, capture_bytes=1 << 20, extra={"kind": "notebook"})
    p = subprocess.run([sys.executable, *args, RUNNER, tp], capture_output=True, text=True,
                       timeout=120, env={**launch_env(tp), **env})
    final = events(root, t)[-1]
    assert p.returncode == 1 and final["state"] == "failed"
    assert "notebook jobs need ipykernel in the node's python" in final["reason"]
    assert "\n" not in final["reason"]


def test_outputs_reach_the_kernel_while_the_run_goes(tmp_path):
    """The cell waits for a file that only the kernel's on_output creates once it has seen the
    cell's first line: the run can only complete if that line came back while it was running."""
    from xt_magic.core import api
    marker = tmp_path / "seen"
    cell = ("import os, time\nprint('first line', flush=True)\n"
            f"for _ in range(3000):\n    if os.path.exists({str(marker)!r}):\n        break\n"
            "    time.sleep(0.01)\nelse:\n    raise TimeoutError('the kernel never saw the line')\n"
            "print('second line')\n")
    seen = []

    def on_output(job, run, records):
        for rec in records or ():
            seen.append((job.state(run), rec.get("text")))
            if "first line" in (rec.get("text") or ""):
                marker.touch()
    job = api.run_cell(cell, {"__name__": "__main__"}, wait=True, on_output=on_output)
    assert job.states() == {"completed": 1}
    assert seen[0] == ("running", "first line\n") and seen[-1][1] == "second line\n"


def test_forged_outputs_and_notebook_are_refused(xt_home):
    """Someone who can write the store can neither add an output line nor swap the notebook:
    each line is signed with the job key, and a cell run's notebook is built from verified parts
    (a run.ipynb planted in the store is never read)."""
    import pytest
    from xt_magic.core import api
    from xt_magic.core.errors import JobError
    job = api.run_cell("print('real')\n1 + 1\n", {"__name__": "__main__"}, wait=True)
    assert "real" in repr(job.show())
    runs = xt_home / "file_store" / "ws1" / "runs" / "run1.1"
    good = (runs / "outputs.jsonl").read_bytes()
    forged = {"output_type": "display_data", "metadata": {}, "xt_seq": 2, "sig": "0" * 64,
              "data": {"text/html": "<script>steal()</script>"}}
    (runs / "outputs.jsonl").write_bytes(good + json.dumps(forged).encode() + b"\n")
    with pytest.raises(JobError, match="cell output 2 does not verify"):
        job.show()
    (runs / "outputs.jsonl").write_bytes(good.splitlines(True)[0])  # a line dropped
    with pytest.raises(JobError, match="do not match the checksum the run signed"):
        job.show()
    with pytest.raises(JobError, match="do not match the checksum the run signed"):
        job.notebook()  # built from the outputs: refused with them
    (runs / "outputs.jsonl").write_bytes(good)
    assert not (runs / "run.ipynb").exists()
    planted = nbformat.writes(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('fake')")]))
    (runs / "run.ipynb").write_text(planted)  # a cell run's notebook is never read from here
    nb = job.notebook()
    assert nb.cells[1].source == "print('real')\n1 + 1\n"
    assert nb.cells[1].outputs[0].text == "real\n"


def test_shell_and_magic_lines_run_in_a_job_cell(ip):
    """!cmd and %magic lines reach IPython on the node; the cell's inputs are still found."""
    ip.run_cell("greeting = 'hello from the kernel'")
    res = ip.run_cell_magic("xt_run", "--wait",
                            "files = !echo one two\nn = len(greeting)\n%time m = n * 2\n"
                            "print(files, n)\n")
    assert [r.state for r in res] == ["completed"]
    from xt_magic.core import api
    text = repr(api.job(res.job.id).show())
    assert "['one two'] 21" in text and "Wall time" in text


def test_shell_line_on_a_node_without_ipython_is_one_clear_line(tmp_path):
    args, env = _python_without_ipython(tmp_path)
    p, t, final, recs = _run(tmp_path / "store", "x = 1\n!ls\n", args=args, env=env)
    assert p.returncode == 1 and final["state"] == "failed"
    assert "has no IPython: add ipython to the setup's pip-packages" in final["reason"]
    assert "\n" not in final["reason"]


def test_a_failed_sweep_names_how_many_runs_failed_and_shows_the_first():
    import pytest
    from xt_magic.core import api
    from xt_magic.core.errors import RunFailed
    with pytest.raises(RunFailed) as info:
        api.run_cell("if lr > 1:\n    raise ValueError(f'lr {lr} too big')\n",
                     {"__name__": "__main__"}, hp={"lr": [1, 2, 3]}, wait=True,
                     raise_errors=True)
    assert str(info.value).startswith("2 of 3 runs failed; the first, run run1.2 failed: "
                                      "ValueError: lr 2 too big")
    assert "raise ValueError" in info.value.remote_traceback
