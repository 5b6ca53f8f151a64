"""The notebooks under notebooks/ run top to bottom with nbclient (quickstart: tests/test_jobs*)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from xt_magic.core import api

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, cwd: Path, timeout: int = 120):
    """Run a notebook in a kernel that is this venv's python, with the test's XT_HOME and cwd."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=NATIVE_KERNEL_NAME,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute(cwd=str(cwd))  # raises CellExecutionError naming the failing cell
    return nb


def outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for value in (out.get("data") or {}).values():
                parts.append(value if isinstance(value, str) else str(value))
    return "\n".join(parts)


def test_widgets_notebook(tmp_path):
    cwd = Path.cwd()
    try:
        nb = execute("widgets.ipynb", cwd)
        text = outputs(nb)
        assert "application/vnd.jupyter.widget-view+json" in str(nb.cells[3].outputs)
        assert (cwd / "xt_config.yaml").exists()  # the template was created
        assert "job1" in text and "job2" in text
    finally:
        for row in api.jobs().to_dict("records"):
            if row["status"] in ("created", "queued", "running"):
                api.cancel(row["job"])  # the long job of the cancel demo


def test_sweep_and_compare_notebook(tmp_path):
    nb = execute("sweep_and_compare.ipynb", Path.cwd(), timeout=180)
    text = outputs(nb)
    assert "image/png" in str(nb.cells[-1].outputs) and "image/png" in str(nb.cells[9].outputs)
    assert "hp.lr" in text and "loss" in text
    jobs = api.jobs().to_dict("records")
    assert [(j["runs"], j["status"]) for j in jobs] == [(6, "completed"), (5, "completed")]
