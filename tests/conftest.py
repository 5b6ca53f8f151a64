"""Shared test fixtures.

Every test runs with its own XT_HOME (user config, file store, env cache), working directory and
session, so tests never touch ~/.xt. Real components (Azurite, sshd, Slurm, the Batch and Key Vault
REST servers, JupyterLab + Chromium) are started by the fixture modules in tests/fixtures/.
In CI (CI=true) a test whose component is missing fails; elsewhere it is skipped with the reason.
"""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

pytest_plugins = [
    "fixtures.azurite",
    "fixtures.sshd",
    "fixtures.slurm",
    "fixtures.batch_server",
    "fixtures.keyvault_server",
    "fixtures.jupyter",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a component a test needs is not available."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"component missing in CI: {what}", pytrace=False)
    pytest.skip(f"component missing: {what}")


@pytest.fixture(autouse=True)
def xt_home(tmp_path, tmp_path_factory, monkeypatch):
    """Isolated XT_HOME, user config, cwd and session for every test."""
    home = tmp_path / "xt_home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("XT_HOME", str(home))
    monkeypatch.setenv("XT_USER_CONFIG", str(home / "xt_config.yaml"))
    monkeypatch.chdir(work)
    from xt_magic.core import session
    session.reset_session()
    yield home
    session.reset_session()
    _stop_agents(str(tmp_path_factory.getbasetemp()))  # the pool boxes' work dirs are there too


def _stop_agents(under: str) -> None:
    """A test's box agents (local and pool) would otherwise wait out their idle time: stop them.
    (Their supervisors and runs are the test's own business.)"""
    import signal
    from procs import agents
    for pid in agents(under):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def ip():
    """An IPython shell with xt_magic loaded; run magics with ip.run_line_magic/run_cell_magic."""
    from IPython.core.interactiveshell import InteractiveShell
    real_main = sys.modules["__main__"]
    shell = InteractiveShell.instance()
    shell.user_ns.clear()
    shell.user_ns.update({"__name__": "__main__"})
    shell.extension_manager.load_extension("xt_magic")
    yield shell
    shell.extension_manager.unload_extension("xt_magic")
    # InteractiveShell installs its user module as __main__; multiprocessing's spawn (used by
    # other tests) needs the real one back.
    sys.modules["__main__"] = real_main
