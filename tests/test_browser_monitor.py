"""The job monitor in a real browser (JupyterLab 4 and Notebook 7, headless Chromium): during a
run the log pane shows its end and stays where the user scrolled to; the chart has axis titles;
after a kernel restart the monitor says it is stale and how to reattach. Screenshots go to
test-artifacts/."""
from __future__ import annotations

import pytest

from fixtures.jupyter import ARTIFACTS, write_notebook
from xt_magic.core import api

pytestmark = pytest.mark.browser

CELL = """%%xt_run --name chatty
import time, xt_magic
for i in range(600):
    print('line', i, 'of the chatty run', flush=True)
    xt_magic.log(step=i, loss=1.0 / (i + 1))
    time.sleep(0.05)
"""

# the last character of the log's text is inside the log box's visible area
LAST_LINE_VISIBLE = """box => {
  const pre = box.querySelector('pre');
  if (!pre || !pre.textContent.trim()) return false;
  const range = document.createRange();
  const text = pre.lastChild;
  range.setStart(text, Math.max(0, text.length - 2));
  range.setEnd(text, text.length);
  const r = range.getBoundingClientRect(), b = box.getBoundingClientRect();
  return r.bottom <= b.bottom + 2 && r.top >= b.top - 2;
}"""


def shot(locator, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(ARTIFACTS / name))


@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_monitor_in_browser(app, jupyter_server, notebook_driver):
    write_notebook("monitor.ipynb", ["%load_ext xt_magic", CELL])
    driver = notebook_driver(jupyter_server(app))
    page = driver.page
    try:
        driver.open("monitor.ipynb")
        driver.run_all()
        monitor = page.locator(".xt-monitor").first
        monitor.wait_for(timeout=60_000)
        box = monitor.locator(".xt-log-box")
        page.wait_for_function("b => (b.querySelector('pre') || {textContent: ''}).textContent"
                               ".includes('line 40 ')", arg=box.element_handle(), timeout=60_000)
        # the log overflows its box and the newest line is what is shown
        assert box.evaluate("b => b.scrollHeight > b.clientHeight + 20")
        assert box.evaluate(LAST_LINE_VISIBLE)
        assert box.evaluate("b => b.scrollWidth <= b.clientWidth + 1")  # no sideways scrollbar
        page.wait_for_function("b => b.querySelector('pre').textContent.includes('line 60 ')",
                               arg=box.element_handle(), timeout=60_000)
        assert box.evaluate(LAST_LINE_VISIBLE)  # still at the end as lines arrive
        # chart: axis titles, the default metric
        chart = monitor.locator("svg.xt-chart")
        chart.wait_for()
        assert chart.locator("text.xt-axis-x").text_content() == "step"
        assert chart.locator("text.xt-axis-y").text_content() == "loss"
        shot(monitor, f"monitor-running-{app}.png")

        # a narrow window: the log and the chart stack instead of squeezing side by side
        page.set_viewport_size({"width": 760, "height": 1000})
        chart_box = monitor.locator(".xt-chart-box")
        page.wait_for_function("([c, b]) => c.getBoundingClientRect().top >= "
                               "b.getBoundingClientRect().bottom - 1",
                               arg=[chart_box.element_handle(), box.element_handle()],
                               timeout=10_000)
        shot(monitor, f"monitor-narrow-{app}.png")
        page.set_viewport_size({"width": 1400, "height": 1000})

        # the user scrolls up: the pane stays off the end while lines keep coming
        box.evaluate("b => { b.scrollTop = b.scrollTop - 120; }")
        before = box.evaluate("b => b.querySelector('pre').textContent.length")
        page.wait_for_function("([b, n]) => b.querySelector('pre').textContent.length > n + 200",
                               arg=[box.element_handle(), before], timeout=60_000)
        assert not box.evaluate(LAST_LINE_VISIBLE)
        shot(monitor, f"monitor-scrolled-up-{app}.png")

        # a kernel restart: nothing updates the old monitor any more; it says so
        driver.restart_kernel()
        stale = monitor.locator(".xt-stale")
        page.wait_for_function("e => getComputedStyle(e).visibility === 'visible'",
                               arg=stale.element_handle(), timeout=60_000)
        assert "stale" in stale.inner_text() and "%xt_monitor job1" in stale.inner_text()
        shot(monitor, f"monitor-stale-{app}.png")
    finally:
        for row in api.jobs().to_dict("records"):
            if row["status"] in ("created", "queued", "running"):
                api.cancel(row["job"])
