"""Authenticated results (docs/architecture.md "Runner ticket, launch secret and signing").

An attacker who can read and list the whole container (a read+list container SAS on Azurite)
finds no URL and no key in it, cannot write any run's paths, and a result planted by someone who
CAN write the store (a forged ``completed`` event and a pickle whose unpickling would run code) is
refused by the kernel, before and after the real run completed. The same refusals on a file store.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import pickle

import pytest

from xt_magic.core import api
from xt_magic.core.errors import JobError
from xt_magic.core.protocol import keys
from xt_magic.core.protocol.layout import Layout
from xt_magic.core.session import get_session
from xt_magic.core.storage import get_store


class _Bomb:
    """Unpickling this creates a marker file: proves whether the kernel unpickled it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def bomb(marker) -> bytes:
    return pickle.dumps({"v": _Bomb(str(marker))})


def forged_completed(job: str, run: str, data: bytes, **extra) -> bytes:
    """What a store writer can append: a completed event naming the planted pickle's sha256."""
    import hashlib
    event = {"time": "2030-01-01T00:00:00.000+00:00", "ts": 1.0, "state": "completed",
             "job": job, "run": run, "exit_code": 0,
             "vars_sha256": hashlib.sha256(data).hexdigest(), **extra}
    return (json.dumps(event, sort_keys=True) + "\n").encode()


WAIT_CELL = ("import os, time\n"
             "while not os.path.exists(FLAG):\n    time.sleep(0.02)\n"
             "v = 'genuine'\n")


# ---- blob store, attacker with a read+list container SAS ------------------------------------------
def blob_config(azurite, container):
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n" + azurite.store_entry(container) +
                 "xt-services: {storage: teamstore, target: local}\n")


def reader(azurite, container):
    """A ContainerClient holding only a read+list SAS for the whole container."""
    from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas
    sas = generate_container_sas(azurite.account, container, account_key=azurite.key,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
    return ContainerClient.from_container_url(f"{azurite.blob_endpoint}/{container}?{sas}")


def writer(azurite, container):
    """A store writer (the account key): can plant objects, but has no job key."""
    from azure.storage.blob import BlobServiceClient
    return BlobServiceClient.from_connection_string(azurite.connection_string) \
        .get_container_client(container)


def read_everything(client) -> dict[str, bytes]:
    return {b.name: client.download_blob(b.name).readall() for b in client.list_blobs()}


def try_writes(client, path: str) -> list[int]:
    """Status of every write a reader might try on ``path``: all must be refused."""
    from azure.core.exceptions import HttpResponseError
    out = []
    blob = client.get_blob_client(path)
    for attempt in (lambda: blob.upload_blob(b"evil", overwrite=True),
                    lambda: blob.append_block(b"evil\n"),
                    lambda: blob.delete_blob()):
        try:
            attempt()
            out.append(201)
        except HttpResponseError as err:
            out.append(err.status_code)
    return out


def wait_done(job):
    job.wait(timeout=60, progress=False)
    assert job.done


@pytest.mark.azurite
def test_read_list_principal_cannot_write_or_forge_results(azurite, azurite_container, tmp_path):
    blob_config(azurite, azurite_container)
    flag = tmp_path / "flag"
    marker = tmp_path / "unpickled"
    lay = Layout("ws1")
    waiting = api.run_cell(WAIT_CELL, {"FLAG": str(flag)}, outputs=["v"])   # job1: still running
    quick = api.run_cell("v = 'quick'", {}, outputs=["v"])                    # job2: completes
    wait_done(quick)
    assert api.results(quick.id)["v"] == "quick"  # a genuine signed result loads

    store = get_store(get_session())
    key_hex = {job: keys.job_key(store, "ws1", job).hex() for job in ("job1", "job2")}
    spy = reader(azurite, azurite_container)
    blobs = read_everything(spy)
    assert {lay.ticket("run1.1"), lay.ticket("run2.1"), lay.events("run2.1")} <= set(blobs)
    # (a) nothing in the container grants access or signs: no SAS URL, no job key
    for name, data in blobs.items():
        text = data.decode("latin-1")
        assert "sig=" not in text and "se=" not in text and azurite.blob_endpoint not in text, name
        assert not any(k in text for k in key_hex.values()), name
    # (b) no run path (nor a ticket) can be written with what the container gives away
    for run in ("run1.1", "run2.1"):
        for path in list(lay.run_paths(run).values()) + [lay.ticket(run)]:
            assert all(code == 403 for code in try_writes(spy, path)), path

    # (c) a store writer plants a pickle and a completed event naming it ...
    planted = writer(azurite, azurite_container)
    data = bomb(marker)
    # ... before the real run completed
    planted.upload_blob(lay.run_paths("run1.1")["vars"], data, overwrite=True)
    planted.get_blob_client(lay.events("run1.1")).append_block(
        forged_completed("job1", "run1.1", data, sig="0" * 64))
    with pytest.raises(JobError, match=r"^run1\.1: result signature does not verify; "
                                       r"nothing loaded$"):
        api.results(waiting.id)
    assert not marker.exists()
    # ... and after it completed: its signed sha256 no longer matches the planted pickle
    planted.upload_blob(lay.run_paths("run2.1")["vars"], data, overwrite=True)
    planted.get_blob_client(lay.events("run2.1")).append_block(
        forged_completed("job2", "run2.1", data))
    with pytest.raises(JobError, match=r"^run2\.1: output variables at .* do not match the "
                                       r"checksum its run signed; nothing loaded"):
        api.results(quick.id)
    assert not marker.exists()
    flag.write_text("go")
    wait_done(waiting)
    with pytest.raises(JobError, match=r"^run1\.1: "):  # the forged final event came first
        api.results(waiting.id)
    assert not marker.exists()


# ---- file store ---------------------------------------------------------------------------------
def file_store_root(xt_home) -> str:
    return str(xt_home / "file_store")


def test_file_store_forged_event_and_tampered_outputs_refused(xt_home, tmp_path):
    marker = tmp_path / "unpickled"
    job = api.run_cell("v = 1", {}, outputs=["v"])
    wait_done(job)
    assert api.results(job.id)["v"] == 1
    root = file_store_root(xt_home)
    paths = Layout("ws1").run_paths("run1.1")
    full = {k: os.path.join(root, *p.split("/")) for k, p in paths.items()}
    data = bomb(marker)
    genuine = open(full["events"], "rb").read()
    real_final = json.loads(genuine.splitlines()[-1])
    assert real_final["state"] == "completed" and real_final["sig"]

    # tampered vars.pkl under the genuine signed event: the signed sha256 does not match
    with open(full["vars"], "wb") as fh:
        fh.write(data)
    with pytest.raises(JobError, match=r"^run1\.1: output variables .* nothing loaded"):
        api.results(job.id)
    # tampered event: the real one rewritten to name the planted pickle, its old sig kept
    lines = genuine.splitlines()
    lines[-1] = forged_completed("job1", "run1.1", data, sig=real_final["sig"]).strip()
    with open(full["events"], "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    with pytest.raises(JobError, match=r"^run1\.1: result signature does not verify; "
                                       r"nothing loaded$"):
        api.results(job.id)
    # a signed event of another run of the same key is not this run's
    other = dict(real_final, run="run1.2")
    lines[-1] = json.dumps(other, sort_keys=True).encode()
    with open(full["events"], "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    with pytest.raises(JobError, match="result signature does not verify"):
        api.results(job.id)
    assert not marker.exists()


def test_results_without_the_job_key_load_nothing(xt_home, tmp_path):
    job = api.run_cell("v = 1", {}, outputs=["v"])
    wait_done(job)
    os.unlink(keys.master_path())  # another machine or account: the key is not here
    with pytest.raises(JobError, match=r"^job1: this job's key is not on this machine"):
        api.results(job.id)


def test_master_key_and_local_launch_secrets_are_private(xt_home):
    job = api.run_cell("v = 1", {}, outputs=["v"])
    wait_done(job)
    assert os.stat(keys.master_path()).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(keys.master_path())).st_mode & 0o777 == 0o700
    from xt_magic.core.paths import local_root
    jobdir = os.path.join(local_root(), "jobs", "ws1", "job1")
    assert os.stat(jobdir).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(jobdir, "job.json")).st_mode & 0o777 == 0o600
    key = keys.job_key(get_store(get_session()), "ws1", "job1").hex()
    assert key in open(os.path.join(jobdir, "job.json")).read()  # the supervisor's private copy
    for base, _dirs, files in os.walk(file_store_root(xt_home)):
        for f in files:
            assert key.encode() not in open(os.path.join(base, f), "rb").read(), f
