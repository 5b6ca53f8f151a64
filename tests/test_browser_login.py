"""The login panel in JupyterLab + headless Chromium, against the local Azure AD (device code):
the code is shown as text with a link, the "user" signs in, the status shows who, logout works."""
from __future__ import annotations

import pytest

from fixtures.jupyter import ARTIFACTS, write_notebook

pytestmark = pytest.mark.browser


def test_login_panel_device_code_in_browser(jupyter_server, notebook_driver, aad_vault, monkeypatch):
    aad_vault.env(monkeypatch, service_principal=False)  # inherited by the server and its kernels
    write_notebook("login.ipynb", ["%load_ext xt_magic\n%xt_login --form"])
    driver = notebook_driver(jupyter_server("lab"))
    page = driver.page
    driver.open("login.ipynb")
    driver.run_all()
    driver.wait_idle()
    panel = page.locator(".xt-login-panel")
    panel.get_by_text("not logged in").wait_for()
    panel.locator("select").first.select_option("device-code")
    panel.get_by_placeholder("general.azure-tenant-id").fill(aad_vault.tenant)
    panel.get_by_role("button", name="Log in").click()
    code = panel.locator(".xt-device-code")
    code.wait_for(timeout=60_000)
    assert panel.locator("a", has_text="devicelogin").get_attribute("href") == \
        "https://microsoft.com/devicelogin"
    aad_vault.approve(code.inner_text().strip())  # the user signs in elsewhere
    panel.get_by_text("logged in as").wait_for(timeout=60_000)
    assert "ada@contoso.example" in panel.inner_text() and "device-code" in panel.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    panel.screenshot(path=str(ARTIFACTS / "login-panel-lab.png"))
    assert panel.get_by_role("button", name="Log in").is_disabled()
    panel.get_by_role("button", name="Log out").click()
    panel.get_by_text("not logged in").wait_for()
