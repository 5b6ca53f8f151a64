"""`import xt_magic` and `%load_ext xt_magic` must not import heavy optional modules."""
import json
import subprocess
import sys

HEAVY = {"azure", "asyncssh", "paramiko", "ipywidgets", "pandas", "matplotlib", "optuna",
         "ruamel", "jsonschema", "cloudpickle"}

PROBE = r"""
import json, sys
import xt_magic
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.extension_manager.load_extension("xt_magic")
assert "xt_config" in ip.magics_manager.magics["line"]
assert "xt_run" in ip.magics_manager.magics["cell"]
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_import_and_load_ext_are_light():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "xt_magic" in loaded
    assert not (loaded & HEAVY), f"heavy modules imported at load: {sorted(loaded & HEAVY)}"


API_PROBE = r"""
import json, sys
import xt_magic as xt
before = sorted(m for m in sys.modules if m.startswith("xt_magic"))
names = {n: callable(getattr(xt, n)) for n in xt._API}   # touched, not called
print(json.dumps([before, names, sorted({m.split(".")[0] for m in sys.modules})]))
"""


def test_api_names_load_lazily_and_nothing_heavy_until_called():
    out = subprocess.run([sys.executable, "-c", API_PROBE], capture_output=True, text=True, check=True)
    before, names, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == ["xt_magic"]  # the API module itself loads on the first name used
    assert {"submit", "run_cell", "preview", "jobs", "job", "config", "login", "logout"} <= set(names)
    assert all(names.values()), names
    assert not (set(loaded) & HEAVY), f"heavy modules imported by the API names: {sorted(set(loaded) & HEAVY)}"


def test_unload_and_reload(ip):
    ip.extension_manager.unload_extension("xt_magic")
    assert "xt_config" not in ip.magics_manager.magics["line"]
    ip.extension_manager.load_extension("xt_magic")
    assert "xt_config" in ip.magics_manager.magics["line"]


BACKEND_PROBE = r"""
import json, sys
from xt_magic.core.registry import backend_classes
classes = backend_classes(plugins=False)
facts = {k: [c.kind, list(c.services), list(c.service_types), sorted(c.target_schema)] for k, c in classes.items()}
print(json.dumps([facts, sorted({m.split(".")[0] for m in sys.modules})]))
"""


def test_reading_backend_classes_is_light():
    """Validation, docs and the form read every backend class: no SDK may load for that."""
    out = subprocess.run([sys.executable, "-c", BACKEND_PROBE], capture_output=True, text=True, check=True)
    facts, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(facts) == {"local", "pool", "slurm", "batch"}
    assert facts["batch"][2] == ["batch"] and "vm-size" in facts["batch"][3]
    # asyncio too: the ssh layer under pool and slurm loads it only to connect
    assert not (set(loaded) & {"azure", "asyncssh", "paramiko", "pandas", "ipywidgets", "asyncio"}), loaded


RUN_PROBE = r"""
import json, sys
from xt_magic.core import api
job = api.run_cell("y = 1", {"__name__": "__main__"}, outputs=["y"], wait=True)
assert job.results()["y"] == 1
print(json.dumps(sorted(m for m in sys.modules if m.startswith("xt_magic.core.jobs."))))
"""


def test_a_plain_run_loads_no_sweep_or_search_module():
    """A first run_cell pays for what it uses: sweeps and search load with hp or a search."""
    out = subprocess.run([sys.executable, "-c", RUN_PROBE], capture_output=True, text=True,
                         check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "xt_magic.core.jobs.submit" in loaded
    assert not loaded & {"xt_magic.core.jobs.sweeps", "xt_magic.core.jobs.search",
                         "xt_magic.core.jobs.early_stop"}, loaded
