"""notebooks/quickstart.ipynb runs top to bottom on the local default (nbclient, venv kernel)."""
from __future__ import annotations

import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_runs_top_to_bottom(tmp_path, xt_home):
    import nbformat
    from nbclient import NotebookClient
    src = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(src, work / "quickstart.ipynb")
    nb = nbformat.read(str(work / "quickstart.ipynb"), as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()

    def texts(cell):
        return "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                       for o in cell.get("outputs", []))

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    by_source = {c.source.splitlines()[0]: c for c in nb.cells if c.cell_type == "code"}
    assert "4.9" in texts(by_source["job.results()['mean']"])
    assert "6 completed" in texts(by_source["sweep = _"])
    plot = by_source["%xt_plot {sweep.id} loss"]
    assert any("image/png" in o.get("data", {}) for o in plot.outputs)
    # the jobs went to this test's own store
    assert os.path.isdir(xt_home / "file_store" / "ws1" / "jobs" / "job2")
