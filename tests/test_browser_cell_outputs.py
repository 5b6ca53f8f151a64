"""A remote figure and DataFrame shown inline by `%%xt_run --wait` in JupyterLab (headless
Chromium), a failed run's red cell, a sweep's outputs grouped by run. Screenshots go to
test-artifacts/ (gitignored)."""
from __future__ import annotations

import pytest
from fixtures.jupyter import ARTIFACTS, write_notebook

pytestmark = pytest.mark.browser

CELL = """\
%%xt_run --wait
import os
import matplotlib.pyplot as plt
import pandas as pd
df = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.3]})
print("trained on pid", os.getpid())
plt.plot(df.epoch, df.loss, marker="o")
plt.title("remote loss")
plt.show()
df
"""


SWEEP = """\
%%xt_run --hp lr=[0.1,0.2,0.3,0.4] --wait
print("training with lr", lr)
lr * 100
"""


def test_remote_figure_and_dataframe_inline_in_jupyterlab(jupyter_server, notebook_driver):
    write_notebook("remote.ipynb", ["%load_ext xt_magic\nimport os\nos.getpid()", CELL, SWEEP,
                                    "%%xt_run --wait\nraise ValueError('remote bad value')"])
    driver = notebook_driver(jupyter_server("lab"))
    page = driver.page
    driver.open("remote.ipynb")
    driver.run_all()
    driver.wait_idle(timeout=120)
    cell = page.locator(".jp-CodeCell").nth(1)
    figure = cell.locator(".jp-OutputArea-output img")
    figure.wait_for(timeout=60_000)
    assert figure.get_attribute("src").startswith("data:image/png;base64,")
    table = cell.locator(".jp-OutputArea-output table.dataframe")
    assert "loss" in table.inner_text() and "0.3" in table.inner_text()
    kernel_pid = page.locator(".jp-CodeCell").nth(0).locator(".jp-OutputArea-output").inner_text()
    printed = cell.locator(".jp-OutputArea-output", has_text="trained on pid").inner_text()
    assert printed.split()[-1] != kernel_pid.strip()  # it ran in another process
    ARTIFACTS.mkdir(exist_ok=True)
    cell.scroll_into_view_if_needed()
    cell.screenshot(path=str(ARTIFACTS / "remote-figure-dataframe-lab.png"))
    sweep = page.locator(".jp-CodeCell").nth(2)
    groups = sweep.locator("details.xt-run-outputs")
    assert groups.count() == 4
    opened = {groups.nth(i).get_attribute("data-run"): groups.nth(i).get_attribute("open")
              is not None for i in range(4)}
    assert opened == {"run2.1": True, "run2.2": True, "run2.3": True, "run2.4": False}
    assert "lr=0.2" in sweep.inner_text() and "training with lr 0.2" in sweep.inner_text()
    sweep.screenshot(path=str(ARTIFACTS / "sweep-grouped-outputs-lab.png"))
    failed = page.locator(".jp-CodeCell").nth(3)
    error = failed.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    error.first.wait_for(timeout=30_000)
    assert "remote bad value" in failed.inner_text() and "RunFailed" in failed.inner_text()
    failed.screenshot(path=str(ARTIFACTS / "remote-error-lab.png"))
