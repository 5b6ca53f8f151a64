"""The whole local-target flow with the Azure blob store (Azurite) as storage: %%xt_run, a sweep,
results, metrics and logs, the runner reaching the store only through per-blob SAS URLs, the
account key coming from the vault ($vault, through the real SecretClient)."""
from __future__ import annotations

import json

import pytest

from xt_magic.core import api
from xt_magic.core.session import get_session

pytestmark = pytest.mark.azurite


def setup_blob_config(aad_vault, monkeypatch, azurite, container):
    aad_vault.env(monkeypatch)
    aad_vault.secrets["xt-keys"] = json.dumps({"teamstore": azurite.key})
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n"
                 "  teamvault: {type: vault, url: 'https://xtteamvault.vault.azure.net/'}\n"
                 + azurite.store_entry(container, "$vault") +
                 "xt-services: {storage: teamstore, vault: teamvault, target: local}\n")
    status = api.login(method="service-principal")
    assert status.secrets == ["xt-keys"]


def test_local_job_with_blob_store(aad_vault, monkeypatch, azurite, azurite_container, ip,
                                   capsys):
    setup_blob_config(aad_vault, monkeypatch, azurite, azurite_container)
    ip.run_cell("base = 10\n")
    res = ip.run_cell_magic(
        "xt_run", "--hp lr=[1,2] --outputs score --wait",
        "import os, xt_magic\n"
        "for step in range(3):\n    xt_magic.log(step=step, loss=lr * step)\n"
        "score = base + lr\n"
        "open(os.path.join(os.environ['XT_OUTPUT_DIR'], 'm.txt'), 'w').write('w')\n"
        "print('trained', lr)\n")
    assert sorted(r.variables["score"] for r in res) == [11, 12]
    assert all(r.state == "completed" for r in res)
    df = api.metrics("job1")
    assert len(df) == 6 and sorted(df["loss"].tolist()) == [0, 0, 1, 2, 2, 4]
    api.logs("run1.2")
    assert "trained 2" in capsys.readouterr().out
    from xt_magic.core.storage import get_store
    store = get_store(get_session())
    assert type(store).__name__ == "AzureBlobStore"
    ticket = json.loads(store.read_bytes("ws1/runs/run1.1/ticket.json"))
    text = json.dumps(ticket)
    assert "io" not in ticket and "sig=" not in text and "http" not in text  # no URL stored
    assert azurite.key not in text and "AccountKey" not in text
    names = set(store.list("ws1/runs/run1.1"))
    assert {"ws1/runs/run1.1/events.jsonl", "ws1/runs/run1.1/console.txt",
            "ws1/runs/run1.1/metrics.jsonl", "ws1/runs/run1.1/outputs/vars.pkl"} <= names


def test_failed_run_with_blob_store(aad_vault, monkeypatch, azurite, azurite_container):
    setup_blob_config(aad_vault, monkeypatch, azurite, azurite_container)
    job = api.run_cell("raise ValueError('bad lr')\n", {"__name__": "__main__"})
    job.wait(timeout=120, progress=False)
    assert job.state("run1.1") == "failed"
    err = job.results().errors["run1.1"]
    assert "bad lr" in str(err)


def test_xt_script_checkpoint_and_data_with_blob_store(aad_vault, monkeypatch, azurite,
                                                       azurite_container, ip):
    """Through SAS URLs only: a script's xtlib.run metrics, its checkpoint (read back by
    %xt_rerun --resume), and a data download (XT_DATA_DIR)."""
    setup_blob_config(aad_vault, monkeypatch, azurite, azurite_container)
    with open("xt_config.yaml", "a") as fh:
        fh.write("data: {data-action: download, data-share-path: sets/toy}\n")
    from xt_magic.core.session import reset_session
    reset_session()
    api.login(method="service-principal")
    from xt_magic.core.storage import get_store
    get_store(get_session()).write_bytes("sets/toy/a.txt", b"alpha")
    with open("ck.py", "w") as fh:
        fh.write("import os, sys\nfrom xtlib.run import Run\nrun = Run()\n"
                 "print('data', open(os.path.join(os.environ['XT_DATA_DIR'], 'a.txt')).read())\n"
                 "cp = run.get_checkpoint() or {'n': 0}\nn = cp['n'] + 1\n"
                 "run.log_metrics({'n': n, 'step': n})\nrun.set_checkpoint({'n': n})\n"
                 "sys.exit(0 if run.is_resuming() else 4)\n")
    job = ip.run_line_magic("xt_run", "ck.py")
    job.wait(timeout=120, progress=False)
    assert api.status(job.runs[0])["exit_code"] == 4
    res = ip.run_line_magic("xt_rerun", f"{job.runs[0]} --resume --wait")
    assert res.job.status == "completed"
    assert list(api.metrics(res.job.id)["n"]) == [2]
    import io
    buf = io.StringIO()
    api.logs(res.job.runs[0], out=buf)
    assert "data alpha" in buf.getvalue()


def test_a_look_at_a_quiet_sweep_is_one_listing_and_no_events_read(aad_vault, monkeypatch, azurite,
                                                                   azurite_container):
    """Waiting on a sweep over the blob store costs one listing per look, not a request per run:
    while no run's events move, a look reads none of them."""
    from runner_helpers import events_reads, wait_for
    from xt_magic.core.storage.azure_blob import AzureBlobStore
    setup_blob_config(aad_vault, monkeypatch, azurite, azurite_container)
    with open("xt_config.yaml", "a") as fh:
        fh.write("compute-targets: {local: {max-runs: 6}}\n")
    from xt_magic.core.session import reset_session
    reset_session()
    api.login(method="service-principal")
    job = api.run_cell("import time\ntime.sleep(60)\n", {"__name__": "__main__"},
                       hp={"lr": [1, 2, 3, 4, 5, 6]})
    try:
        wait_for(lambda: job.refresh().states() == {"running": 6}, 60, "six running runs")
        store = job._ctx().store
        listings = []
        real = type(store._container).list_blobs
        monkeypatch.setattr(type(store._container), "list_blobs",
                            lambda self, **kw: listings.append(kw) or real(self, **kw))
        with events_reads(AzureBlobStore) as reads:
            job.refresh()
        assert reads == [] and len(listings) == 1, (reads, listings)
        assert job.states() == {"running": 6}
        # the live monitor too: a tick reads only what moved (events, metrics, the console)
        from xt_magic.widgets.monitor import JobMonitor
        mon = JobMonitor(job.id, start=False, reconcile_every=1e9)
        mon.tick()
        assert mon.states() == {run: "running" for run in job.runs}
        listings.clear()
        served = []
        real_read = AzureBlobStore.read_from
        monkeypatch.setattr(AzureBlobStore, "read_from",
                            lambda self, path, offset: served.append(path) or
                            real_read(self, path, offset))
        assert not mon.tick() and served == [] and len(listings) == 1, (served, listings)
    finally:
        api.cancel(job.id)
