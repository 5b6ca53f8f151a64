"""Smoke: JupyterLab 4 and Notebook 7 render an ipywidgets button whose click reaches the kernel."""
from __future__ import annotations

import sys

import pytest
from fixtures.jupyter import write_notebook

pytestmark = pytest.mark.browser

CELL = """
import ipywidgets as w, os
clicks = []
label = w.Label("waiting")
button = w.Button(description="ping kernel")
def on_click(_):
    clicks.append(1)
    label.value = f"pong {len(clicks)} pid={os.getpid()} home={os.environ['XT_HOME'][-7:]}"
button.on_click(on_click)
w.VBox([button, label])
"""


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_button_click_reaches_kernel(app, jupyter_server, notebook_driver, tmp_path):
    write_notebook("smoke.ipynb", ["import xt_magic, sys; print(sys.executable)", CELL])
    server = jupyter_server(app)
    driver = notebook_driver(server)
    driver.open("smoke.ipynb")  # retried once on a cold start
    driver.run_all()
    driver.wait_idle()
    assert driver.outputs_text().split()[0] == sys.executable  # the venv's python is the kernel
    driver.page.get_by_role("button", name="ping kernel").click()
    driver.page.get_by_text("pong 1").wait_for(timeout=30_000)
    assert "home=xt_home" in driver.page.get_by_text("pong 1").inner_text()
