"""%xt_config and the config form in a real browser (JupyterLab 4 and Notebook 7, headless
Chromium): the config is a summary then closed sections that open on a click, with no empty value
boxes; the form picks sections from one dropdown, shows per target kind only that kind's keys with
their help lines, and its labels are not cut. Screenshots go to test-artifacts/."""
from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.jupyter import ARTIFACTS, write_notebook

pytestmark = pytest.mark.browser

CONFIG = """\
compute-targets:
  local: {service: pool, boxes: [localhost], setup: local}
  hpc:
    service: slurm
    partition: debug
    setup: local
"""


def shot(locator, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(ARTIFACTS / name))


def fits(locator) -> bool:
    """The element's text is not cut: its content is no wider than its box."""
    return locator.evaluate("e => e.scrollWidth <= e.clientWidth + 1")


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_config_and_form_in_browser(app, jupyter_server, notebook_driver):
    (Path.cwd() / "xt_config.yaml").write_text(CONFIG)
    write_notebook("config.ipynb", ["%load_ext xt_magic", "%xt_config", "%xt_config --form"])
    driver = notebook_driver(jupyter_server(app))
    page = driver.page
    driver.open("config.ipynb")
    driver.run_all()
    driver.wait_idle()

    # -- %xt_config: summary first, sections closed until clicked -----------------------------
    shown = page.locator(".xt-config").first
    shown.wait_for()
    summary = shown.locator("table.xt-config-summary")
    assert "local (pool)" in summary.inner_text() and "not logged in" in summary.inner_text()
    sections = shown.locator("details.xt-config-section")
    assert sections.count() >= 6
    assert shown.evaluate("e => [...e.querySelectorAll('details')].every(d => !d.open)")
    targets = sections.filter(has=page.locator("summary", has_text="compute-targets"))
    assert not targets.locator("table").is_visible()
    box = shown.bounding_box()
    assert box["height"] < 1000  # folded: not the 4,000 px listing
    shot(shown, f"config-collapsed-{app}.png")
    targets.locator("summary").click()
    assert targets.locator("table").is_visible() and "partition" in targets.inner_text()
    assert shown.locator("code:empty").count() == 0  # section rows: no empty grey value box
    shot(shown, f"config-section-open-{app}.png")

    # -- the form: one section dropdown, per-kind keys with help, labels not cut --------------
    form = page.locator(".xt-config-form")
    form.wait_for()
    assert form.locator(".lm-TabBar").count() == 0
    form.locator(".xt-section-picker select").select_option("compute-targets")
    entries = form.locator(".xt-entries-compute-targets")
    entries.wait_for()
    entries.locator(".widget-dropdown select").first.select_option("local")
    entries.locator(".xt-field-compute-targets--local--boxes").wait_for()
    assert entries.locator("[class*='xt-field-compute-targets--local--partition']").count() == 0
    help_line = entries.locator(".xt-help-compute-targets--local--boxes")
    assert help_line.is_visible() and len(help_line.inner_text().strip()) > 10
    save = form.get_by_role("button", name="Save to xt_config.yaml")
    assert save.is_visible() and fits(save)
    for label in form.locator(".xt-label").all():
        assert fits(label), label.inner_text()
    shot(form, f"config-form-local-{app}.png")
    entries.locator(".widget-dropdown select").first.select_option("hpc")
    entries.locator(".xt-field-compute-targets--hpc--partition").wait_for()
    assert entries.locator("[class*='xt-field-compute-targets--hpc--boxes']").count() == 0
    assert entries.locator(".xt-help-compute-targets--hpc--partition").inner_text().strip()
    shot(form, f"config-form-slurm-{app}.png")
