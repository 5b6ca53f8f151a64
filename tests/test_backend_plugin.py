"""A backend from another package plugs in through the ``xt_magic.backends`` entry point with no
change to xt_magic (issue 10 part 4): tests/fixtures/xt_echo_backend is pip-installed into this
venv and a job runs on it end to end; XT's ``providers`` section selects backends the same way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xt_magic.core.config import load_config
from xt_magic.core.errors import ConfigError

PKG = Path(__file__).resolve().parent / "fixtures" / "xt_echo_backend"

INSTALLED = r"""
import json, sys
from importlib.metadata import distribution, PackageNotFoundError
try:
    dist = distribution("xt-echo-backend")
except PackageNotFoundError:
    print("null"); sys.exit()
print(json.dumps((dist.read_text("direct_url.json") and json.loads(dist.read_text("direct_url.json")).get("url"))))
"""


def install_echo_backend() -> None:
    """pip install -e the fixture package unless this very checkout of it is installed already."""
    got = subprocess.run([sys.executable, "-c", INSTALLED], capture_output=True, text=True, check=True)
    if json.loads(got.stdout.strip() or "null") == PKG.as_uri():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "-e", str(PKG)], check=True, capture_output=True, text=True)


# Runs in a fresh interpreter: an editable install's .pth file is read at start-up only.
JOB = r"""
import json, os, warnings
warnings.simplefilter("error")   # a working plug-in target raises no config warning
from xt_magic.core import api
from xt_magic.core.compute import backend_kind
from xt_magic.core.session import get_session
cfg = get_session().config()
out = {"kind": backend_kind(cfg, "echo", cfg.get("compute-targets.echo")),
       "validate": str(api.config_validate())}
job = api.run_cell("v = 6 * 7\nprint('in the run')\n", {"__name__": "__main__"}, outputs=["v"])
job.wait(timeout=120, progress=False)
out.update(state=job.state("run1.1"), v=job.results()["v"], backend=job.record.backend)
print("RESULT " + json.dumps(out))
"""


def test_entry_point_backend_runs_a_job(tmp_path):
    install_echo_backend()
    with open("xt_config.yaml", "w") as fh:
        fh.write("compute-targets:\n  echo: {service: echo, greeting: hi, setup: local}\n"
                 "xt-services:\n  target: echo\n")
    proc = subprocess.run([sys.executable, "-c", JOB], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["kind"] == "echo" and result["backend"] == "echo"
    assert result["state"] == "completed" and result["v"] == 42
    assert result["validate"].startswith("config OK"), result["validate"]

    # its template is offered by --create, its keys are checked, the docs stay xt_magic's own
    probe = ("from xt_magic.core import api\n"
             "print(api.config_create('echo', path='echo.yaml'))\n"
             "from xt_magic.core.config import docs\n"
             "print('greeting' in docs.render())\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote the echo template" in proc.stdout and proc.stdout.strip().endswith("False")
    assert "service: echo" in open("echo.yaml").read()


def test_providers_section_selects_a_backend_class():
    install_echo_backend()
    sys.path.insert(0, str(PKG))  # the class path must import in this process too
    try:
        with open("xt_config.yaml", "w") as fh:
            fh.write("providers:\n"
                     "  compute: {pool: xtlib.backends.backend_pool.PoolBackend,\n"
                     "            myecho: xt_echo_backend.EchoBackend}\n"
                     "compute-targets:\n  e: {service: myecho}\n")
        cfg = load_config(os.getcwd())
        from xt_magic.core.compute import backend_class
        assert backend_class(cfg, "e", cfg.get("compute-targets.e")).__name__ == "EchoBackend"
        # XT's own class is noted, and xt_magic's pool still serves `service: pool`
        assert any("providers.compute.pool: XT's own class" in n for n in cfg.notes), cfg.notes
        assert backend_class(cfg, "local", cfg.get("compute-targets.local")).kind == "local"
        with open("xt_config.yaml", "w") as fh:
            fh.write("providers:\n  compute: {bad: no_such_module.Backend}\n"
                     "compute-targets:\n  e: {service: bad}\n")
        with pytest.raises(ConfigError) as info:
            load_config(os.getcwd())
        keys = {p.key for p in info.value.problems}
        assert "providers.compute.bad" in keys, info.value.problems
    finally:
        sys.path.remove(str(PKG))


def test_storage_provider_by_class_path(tmp_path):
    with open("xt_config.yaml", "w") as fh:
        fh.write("providers:\n  storage: {mine: xt_magic.core.storage.file.FileStore,\n"
                 "             store-file: xtlib.storage.store_file.FileStore}\n"
                 f"external-services:\n  s: {{type: storage, provider: mine, path: '{tmp_path}/st'}}\n"
                 "xt-services: {storage: s}\n")
    from xt_magic.core import storage
    from xt_magic.core.session import get_session
    store = storage.get_store(get_session())
    assert type(store).__name__ == "FileStore"
    store.write_bytes("x/y", b"1")
    assert (tmp_path / "st" / "x" / "y").read_bytes() == b"1"


EP_PROBE = r"""
import json, sys
from xt_magic.core.registry import backend_classes
kinds = sorted(backend_classes())
print(json.dumps([kinds, "importlib.metadata" in sys.modules]))
"""


def test_entry_points_are_remembered_until_the_installed_packages_change(tmp_path):
    """A new kernel reads the entry points from the cache dir (no importlib.metadata), and a
    package installed, upgraded or removed since is seen at once."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "fake_backend.py").write_text("class FakeBackend:\n    kind = ''\n"
                                          "class OtherBackend:\n    kind = ''\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))

    def kinds() -> tuple[list, bool]:
        out = subprocess.run([sys.executable, "-c", EP_PROBE], capture_output=True, text=True,
                             env=env, check=True)
        return tuple(json.loads(out.stdout.strip().splitlines()[-1]))

    def install(version: str, entry: str) -> None:
        for old in site.glob("fake_backend-*.dist-info"):
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        dist = site / f"fake_backend-{version}.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-backend\nVersion: {version}\n")
        (dist / "entry_points.txt").write_text(f"[xt_magic.backends]\n{entry}\n")

    first, scanned = kinds()
    assert "fake" not in first and scanned
    assert kinds() == (first, False)  # remembered: importlib.metadata not even imported
    install("1.0", "fake = fake_backend:FakeBackend")
    got, scanned = kinds()
    assert "fake" in got and scanned
    assert kinds() == (got, False)
    install("1.1", "other = fake_backend:OtherBackend")  # an upgrade with another entry point
    got, _ = kinds()
    assert "other" in got and "fake" not in got
    for f in (site / "fake_backend-1.1.dist-info").iterdir():
        f.unlink()
    (site / "fake_backend-1.1.dist-info").rmdir()
    assert kinds()[0] == first
