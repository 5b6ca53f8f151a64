"""A missing optional extra is ONE line naming the pip command, from the magic, the API and the
widget alike (the module is hidden with a sys.modules None entry: importing it raises)."""
from __future__ import annotations

import sys

import pytest

from xt_magic.core import api
from xt_magic.core.errors import MissingDependencyError


@pytest.fixture
def no_azure(monkeypatch):
    for name in [n for n in sys.modules if n == "azure" or n.startswith("azure.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "azure", None)  # `import azure...` raises ImportError


def test_login_without_azure_is_one_line_with_the_pip_command(no_azure, ip):
    with pytest.raises(MissingDependencyError) as info:
        api.login(method="auto")
    rendered = info.value._render_traceback_()
    assert len(rendered) == 1 and "\n" not in rendered[0]
    assert rendered[0].count("pip install 'xt-magic[azure]'") == 1
    assert "No module named" not in rendered[0]
    with pytest.raises(MissingDependencyError, match=r"xt-magic\[azure\]"):
        ip.run_line_magic("xt_login", "--method device-code")


def test_login_panel_without_azure_shows_one_line(no_azure):
    from xt_magic.widgets.login_panel import LoginPanel
    panel = LoginPanel()
    panel.login(wait=True)
    assert panel.message.value.count("pip install &#x27;xt-magic[azure]&#x27;") == 1
    assert "No module named" not in panel.message.value
    assert panel.out.outputs == ()  # said once, not again in the output area


def test_compare_without_pandas_names_the_analysis_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    job = api.run_cell("import xt_magic\nxt_magic.log(step=0, loss=1.0)\n", {})
    job.wait(timeout=60, progress=False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'xt-magic\[analysis\]'"):
        api.compare(job.id)


@pytest.mark.parametrize("line", ["xt_config --form", "xt_monitor", "xt_login --form"])
def test_widget_magics_without_ipywidgets_name_the_widgets_extra(monkeypatch, ip, line):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    name, _, rest = line.partition(" ")
    with pytest.raises(MissingDependencyError) as info:
        ip.run_line_magic(name, rest)
    assert info.value._render_traceback_() == [
        f"MissingDependencyError: ipywidgets is needed for %{line} but is not installed — "
        "pip install 'xt-magic[widgets]'"]


def test_ssh_without_asyncssh_names_the_ssh_extra(monkeypatch):
    from xt_magic.core.compute import ssh
    monkeypatch.setitem(sys.modules, "asyncssh", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'xt-magic\[ssh\]'"):
        ssh._asyncssh()
