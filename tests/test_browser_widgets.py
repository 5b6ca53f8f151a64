"""The widgets notebook in a real browser: JupyterLab 4 and Notebook 7 + headless system Chromium.

Run all; edit a compute target in the config form and save (the file on disk changes, its comments
survive); watch the sweep's monitor reach all-completed; cancel the long job from its monitor and
see the state change. Screenshots go to test-artifacts/ (gitignored).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.jupyter import ARTIFACTS
from xt_magic.core import api

pytestmark = pytest.mark.browser

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "widgets.ipynb"
LOCAL = """\
# my team's local config -- this comment must survive a save
general:
  workspace: ws1     # where jobs go
compute-targets:
  local:             # this machine
    service: pool
    boxes: [localhost]
    setup: local
"""


def shot(page, locator, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(ARTIFACTS / name))


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_widgets_notebook_in_browser(app, jupyter_server, notebook_driver):
    cwd = Path.cwd()
    (cwd / "xt_config.yaml").write_text(LOCAL)
    import nbformat
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    # here the form saves into the planted local file (the notebook itself saves into a temp dir)
    # and the long job is cancelled from its monitor (the notebook's last cell would do it first)
    form_cell = [c for c in nb.cells if "%xt_config --form" in c.source]
    assert form_cell and "--path" in form_cell[0].source and "%xt_cancel" in nb.cells[-1].source
    form_cell[0].source = "%xt_config --form"
    nb.cells = nb.cells[:-1]
    nbformat.write(nb, str(cwd / "widgets.ipynb"))
    server = jupyter_server(app)
    driver = notebook_driver(server)
    page = driver.page
    try:
        driver.open("widgets.ipynb")  # retried once on a cold start
        driver.run_all()
        driver.wait_idle(timeout=120)

        # -- config form: edit the local target's max-runs, save, check the file -----------------
        form = page.locator(".xt-config-form")
        form.wait_for()
        form.locator(".xt-section-picker select").select_option("compute-targets")
        form.locator(".xt-field-compute-targets--local--service").wait_for()
        driver.wait_idle(timeout=120)  # the page is built by the kernel: let it settle
        form.locator("text=more keys >> visible=true").click()  # keys not set yet are folded away
        field = form.locator(".xt-field-compute-targets--local--max-runs input")
        field.wait_for()
        field.fill("2")
        field.press("Tab")
        page.get_by_text("pending (not applied)").first.wait_for()
        shot(page, form, f"config-form-edit-{app}.png")
        form.get_by_role("button", name="Save to xt_config.yaml").click()
        form.get_by_text("saved 1 value").wait_for()
        text = (cwd / "xt_config.yaml").read_text()
        assert "max-runs: 2" in text
        assert "# my team's local config -- this comment must survive a save" in text
        assert "# this machine" in text and "# where jobs go" in text
        assert "local" in form.locator(".xt-field-compute-targets--local--max-runs").locator(
            "xpath=..").inner_text()  # provenance: now from the local file
        shot(page, form, f"config-form-saved-{app}.png")

        # -- sweep monitor reaches all-completed ----------------------------------------------------
        monitors = page.locator(".xt-monitor")
        sweep = monitors.filter(has_text="sweep-demo").last  # the %xt_monitor one
        assert monitors.filter(has_text="sweep-demo").count() == 2  # the Job's display + %xt_monitor
        sweep.locator(".xt-done", has_text="3 completed").wait_for(timeout=120_000)
        assert sweep.locator(".xt-state").all_inner_texts() == ["completed"] * 3
        sweep.locator("svg.xt-chart polyline").first.wait_for()
        shot(page, sweep, f"monitor-sweep-{app}.png")

        # -- cancel the long job from its monitor ----------------------------------------------------
        long = monitors.filter(has_text="long-job").first  # the long job's own display
        long.locator(".xt-state", has_text="running").wait_for(timeout=120_000)
        long.get_by_role("button", name="Cancel job").click()
        long.locator(".xt-state", has_text="cancelled").wait_for(timeout=60_000)
        long.locator(".xt-done", has_text="cancelled").wait_for()
        shot(page, long, f"monitor-cancelled-{app}.png")
        assert api.status("job2").status == "cancelled"

        # -- after a kernel restart, %xt_monitor JOB picks the job up again from the store -------
        if app == "lab":
            driver.restart_kernel()
            driver.append_and_run("%load_ext xt_magic\n%xt_monitor job1")
            resumed = page.locator(".jp-CodeCell").last.locator(".xt-monitor")
            resumed.locator(".xt-done", has_text="3 completed").wait_for(timeout=60_000)
            assert resumed.locator(".xt-state").all_inner_texts() == ["completed"] * 3
            assert "[1]" in page.locator(".jp-CodeCell").last.locator(".jp-InputPrompt").inner_text()
    finally:
        for row in api.jobs().to_dict("records"):
            if row["status"] in ("created", "queued", "running"):
                api.cancel(row["job"])
