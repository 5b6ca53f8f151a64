"""The notebooks under notebooks/ run top to bottom with nbclient (quickstart: tests/test_jobs*)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from xt_magic.core import api

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name, cwd: Path, timeout: int = 120, first=None):
    """Run a notebook (a name under notebooks/, or a NotebookNode) in a kernel that is this
    venv's python, with the test's XT_HOME and cwd."""
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
    nb = nbformat.read(NOTEBOOKS / name, as_version=4) if isinstance(name, str) else name
    if first is not None:  # a test harness cell run before the notebook's own
        nb.cells.insert(0, first)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=NATIVE_KERNEL_NAME,
                                     resources={"metadata": {"path": str(cwd)}})
    with pytest.MonkeyPatch.context() as mp:  # the venv's python first: it is the kernel
        mp.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        client.execute(cwd=str(cwd))  # raises CellExecutionError naming the failing cell
    return nb


def outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for value in (out.get("data") or {}).values():
                parts.append(value if isinstance(value, str) else str(value))
    return "\n".join(parts)


def test_widgets_notebook(tmp_path):
    cwd = Path.cwd()
    try:
        nb = execute("widgets.ipynb", cwd)
        text = outputs(nb)
        assert "application/vnd.jupyter.widget-view+json" in str(nb.cells[3].outputs)
        assert not (cwd / "xt_config.yaml").exists()  # the form demo saves into a temp dir
        assert "--path" in "".join(nb.cells[3].source)
        assert "job1" in text and "job2" in text
        jobs = {r["name"]: r["status"] for r in api.jobs().to_dict("records")}
        assert jobs["long-job"] == "cancelled"  # the notebook leaves nothing running
    finally:
        for row in api.jobs().to_dict("records"):
            if row["status"] in ("created", "queued", "running"):
                api.cancel(row["job"])  # the long job of the cancel demo


def test_sweep_and_compare_notebook(tmp_path):
    nb = execute("sweep_and_compare.ipynb", Path.cwd(), timeout=180)
    text = outputs(nb)
    assert "image/png" in str(nb.cells[-1].outputs) and "image/png" in str(nb.cells[9].outputs)
    assert "image/png" in str(nb.cells[15].outputs)
    assert "hp.lr" in text and "loss" in text
    assert "bayesian search on min loss: 8/8 runs, best" in text
    jobs = api.jobs().to_dict("records")
    assert [(j["runs"], j["status"]) for j in jobs][:2] == [(6, "completed"), (5, "completed")]
    assert jobs[2]["runs"] == 8 and jobs[2]["status"] in ("completed", "cancelled")


def test_azure_notebook(batch_config, aad_vault, monkeypatch):
    """azure.ipynb against the local Azure stand-ins: Azurite (blob store), the Batch test server
    and the local Azure AD + Key Vault (login as a service principal from the environment; the
    Batch key is ``$vault``). A harness cell, not in the notebook, points the kernel's vault client
    at the local Key Vault, as the fixture does in-process."""
    import yaml
    import nbformat
    server = batch_config["server"]
    aad_vault.env(monkeypatch)  # AZURE_* / REQUESTS_CA_BUNDLE: inherited by the kernel
    aad_vault.secrets["xtbatch"] = server.key
    cfg = batch_config["write"](key="$vault")
    cfg["external-services"]["teamvault"] = {"type": "vault", "url": aad_vault.vault_url}
    cfg["xt-services"]["vault"] = "teamvault"
    Path("xt_config.yaml").write_text(yaml.safe_dump(cfg))
    harness = nbformat.v4.new_code_cell(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from fixtures.keyvault_server import AzureLocal\n"
        "from xt_magic.core.auth import vault\n"
        "_local = AzureLocal.__new__(AzureLocal)\n"
        f"_local.authority, _local.vault_url, _local.cert = {aad_vault.authority!r}, "
        f"{aad_vault.vault_url!r}, {aad_vault.cert!r}\n"
        "vault.TRANSPORT_FACTORY = _local.transport\n")
    nb = execute("azure.ipynb", Path.cwd(), timeout=180, first=harness)
    text = outputs(nb)
    if os.environ.get("XT_SHOW_NOTEBOOK"):
        print(text)
    assert "logged in as" in text and "xtbatch" in text  # the vault's secret names
    assert "{'run" in text and "0.9" in text and "0.8" in text  # both sweep points came back
    assert "logged out" in text
    for secret in (server.key, aad_vault.client_secret):
        assert secret not in text and secret not in nbformat.writes(nb)
    assert [j["status"] for j in api.jobs().to_dict("records")] == ["completed"]


def test_cell_outputs_notebook():
    nb = execute("cell_outputs.ipynb", Path.cwd(), timeout=180)
    kinds = [sorted(k for o in c.get("outputs", []) for k in o.get("data", {})) for c in nb.cells]
    assert "text/html" in kinds[3] and "image/png" in kinds[5] and "text/markdown" in kinds[5]
    assert nb.cells[7].outputs[-1].output_type == "error"  # the red cell (raises-exception)
    assert "lr = 0.2" in outputs(nb) and (Path.cwd() / "run_notebooks" / "run4.4.ipynb").exists()
    assert "lr = 1.0" in str(nb.cells[-1].outputs)
    shown = nb.cells[11].outputs  # job.show(run): the run's outputs as this cell's own
    assert any("training with lr 0.2" in o.get("text", "") for o in shown)
    assert any(o.get("data", {}).get("text/plain") == "20.0" for o in shown)
