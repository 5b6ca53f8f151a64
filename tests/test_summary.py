"""`python -m xt_magic.summary NOTEBOOK` (the README's main job): runs the notebook, keeps the
executed copy, and ends with a few readable lines: jobs, states and a result value."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def test_summary_runs_keeps_and_summarises(tmp_path, xt_home):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext xt_magic"),
                nbformat.v4.new_code_cell("%%xt_run --name tiny --hp k=[1,2] --outputs v --wait\n"
                                          "v = k * 21\n")]
    src = tmp_path / "work" / "tiny.ipynb"
    nbformat.write(nb, str(src))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run([sys.executable, "-m", "xt_magic.summary", str(src), "--output-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          cwd=tmp_path / "work", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("ran ") and lines[1].startswith("jobs in workspace ws1")
    assert lines[2].strip() == "job1 'tiny' on local: completed (2 completed)"
    assert lines[3].strip().startswith("result: run1.") and "v = 2" in lines[3]
    assert len(lines) == 4 and all(len(line) < 100 for line in lines[1:])
    assert "WARNING" not in proc.stderr and "pip" not in proc.stdout
    kept = nbformat.read(str(tmp_path / "out" / "tiny.ipynb"), as_version=4)
    assert kept.cells[1].outputs  # the executed copy, with its outputs


def test_summary_of_a_failing_notebook_is_one_error_line(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise ValueError('broken cell')")]
    src = tmp_path / "bad.ipynb"
    nbformat.write(nb, str(src))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run([sys.executable, "-m", "xt_magic.summary", str(src), "--output-dir",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "broken cell" in proc.stderr
