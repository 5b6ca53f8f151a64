"""run_cell's per-run store writes (each run's `created` event and ticket): concurrent on a remote
store, in order on the file store. Whichever way, a failing write means no backend submit, one
error naming the run, and a final `failed` event for every run of the job."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from xt_magic.core import api, registry
from xt_magic.core.errors import JobError, StoreError
from xt_magic.core.jobs import fanout
from xt_magic.core.protocol import events as states
from xt_magic.core.storage import get_store
from xt_magic.core.session import get_session

RUNS = 12


@pytest.fixture
def null_local(monkeypatch):
    """The local target records launches and starts nothing (runs stay queued)."""
    monkeypatch.setitem(registry.BACKENDS, "local", ("jobs_support:NullBackend", ""))
    import jobs_support
    jobs_support.SyncBackend.submitted.clear()
    return jobs_support.SyncBackend.submitted


def sweep():
    return api.run_cell("score = lr * 10", {"__name__": "__main__"},
                        hp={"lr": list(range(RUNS))})


def run_events(store, run):
    return states.parse(store.read_from(f"ws1/runs/{run}/events.jsonl", 0))


def check_all_failed(store, bad_run, reason_part):
    runs = [f"run1.{i}" for i in range(1, RUNS + 1)]
    assert json.loads(store.read_bytes("ws1/jobs/job1/job.json"))["runs"] == runs
    for run in runs:
        info = states.fold(run_events(store, run))
        assert info["state"] == "failed", (run, info)
        assert info["reason"].startswith("submit failed: job1: writing run " + bad_run)
        assert reason_part in info["reason"]
        assert not any(e.get("state") == "queued" for e in info["events"])


def failing(real, bad_path, error):
    """``real`` failing for ``bad_path``, except for the `failed` event written afterwards."""
    def write(self, path, data):
        if path == bad_path and b'"failed"' not in data:
            raise error
        return real(self, path, data)
    return write


@pytest.mark.parametrize("concurrent", [False, True], ids=["in-order", "threads"])
def test_failed_ticket_write_submits_nothing_and_fails_every_run(null_local, monkeypatch,
                                                                  concurrent):
    from xt_magic.core.storage.file import FileStore
    if concurrent:
        monkeypatch.setattr(FileStore, "remote", True)
    monkeypatch.setattr(FileStore, "write_bytes", failing(
        FileStore.write_bytes, "ws1/runs/run1.5/ticket.json",
        StoreError("cannot write ws1/runs/run1.5/ticket.json: disk full")))
    with pytest.raises(StoreError, match=r"^job1: writing run run1\.5 failed: cannot write "
                                         r"ws1/runs/run1\.5/ticket\.json: disk full$"):
        sweep()
    assert null_local == []  # the backend never saw a run
    check_all_failed(get_store(get_session()), "run1.5", "disk full")


def test_non_xt_error_becomes_one_job_error_naming_the_run(null_local, monkeypatch):
    from xt_magic.core.storage.file import FileStore
    monkeypatch.setattr(FileStore, "remote", True)
    real = FileStore.append

    def append(self, path, data):
        if path in ("ws1/runs/run1.3/events.jsonl", "ws1/runs/run1.9/events.jsonl") \
                and b'"created"' in data:
            raise OSError("connection reset")
        return real(self, path, data)
    monkeypatch.setattr(FileStore, "append", append)
    # run1.9 fails too unless the pool cancelled it first: the count depends on scheduling,
    # the run named (the first in run order) does not
    with pytest.raises(JobError, match=r"^job1: writing run run1\.3 failed( \(and 1 more runs\))?: "
                                       r"OSError: connection reset$") as info:
        sweep()
    assert isinstance(info.value.__cause__, OSError)
    assert null_local == []
    check_all_failed(get_store(get_session()), "run1.3", "connection reset")


def test_failed_signing_for_the_job_fails_every_run(null_local, monkeypatch):
    from xt_magic.core.storage.file import FileStore

    def node_access(self, **kw):
        raise StoreError("cannot sign SAS URLs: the blob store has no account key")
    monkeypatch.setattr(FileStore, "node_access", node_access)
    with pytest.raises(StoreError, match="^cannot sign SAS URLs"):
        sweep()
    assert null_local == []
    store = get_store(get_session())
    for i in range(1, RUNS + 1):
        info = states.fold(run_events(store, f"run1.{i}"))
        assert info["state"] == "failed" and "cannot sign" in info["reason"]


def test_file_store_stays_in_order_and_created_precedes_queued(null_local):
    job = sweep()
    assert [launch.run_id for launch in null_local] == job.runs
    assert job.states() == {"queued": RUNS}
    store = get_store(get_session())
    for run in job.runs:
        assert [e["state"] for e in run_events(store, run)] == ["created", "queued"]


# ---- blob store (Azurite): the concurrent path ---------------------------------------------------
def blob_config(azurite, container):
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n"
                 f"  teamstore: {{type: storage, provider: azure-blob-21, container: {container},"
                 f" connection-string: '{azurite.connection_string}'}}\n"
                 "xt-services: {storage: teamstore, target: local}\n")


@pytest.mark.azurite
def test_blob_store_sweep_tickets_and_event_order(null_local, azurite, azurite_container):
    blob_config(azurite, azurite_container)
    job = sweep()
    store = get_store(get_session())
    assert fanout._store_workers(store, RUNS) == RUNS  # the threads path
    assert [launch.run_id for launch in null_local] == job.runs  # launches in run order
    assert job.states() == {"queued": RUNS}
    bundle = "ws1/jobs/job1/bundle/"
    for launch in null_local:
        run = launch.run_id
        assert [e["state"] for e in run_events(store, run)] == ["created", "queued"]
        ticket = json.loads(store.read_bytes(f"ws1/runs/{run}/ticket.json"))
        assert ticket == launch.ticket and ticket["run"] == run
        assert "sig=" not in json.dumps(ticket) and "io" not in ticket  # no URL is stored
        own = f"ws1/runs/{run}/"
        urls = launch.launch_secret["access"]["urls"]  # the launch channel's access
        assert list(urls) == [
            bundle + "cell.py", bundle + "cloudpickle.zip",
            own + "events.jsonl",  # read too: whether an earlier attempt of the run started
            own + "outputs/vars.pkl", own + "outputs/files.zip", own + "run.ipynb",
            own + "console.txt", own + "metrics.jsonl",
            own + "outputs.jsonl",  # cell outputs: appended as they come, the notebook at the end
            # the run's checkpoint: read back after a requeue, so read and write
            own + "checkpoints/dict_cp.json", own + "checkpoints/file.dat",
            own + "checkpoints/native.pkl"]
        for path, url in urls.items():
            assert url.split("?")[0].endswith(f"/{azurite_container}/{path}") and "sig=" in url
        assert "sp=r&" in urls[bundle + "cell.py"]
        assert "sp=rcw&" in urls[own + "checkpoints/dict_cp.json"]
        assert "sp=racw&" in urls[own + "events.jsonl"] and "sp=acw&" in urls[own + "console.txt"]


@pytest.mark.azurite
def test_blob_store_failed_event_write_submits_nothing(null_local, azurite, azurite_container,
                                                       monkeypatch):
    from xt_magic.core.storage.azure_blob import AzureBlobStore
    blob_config(azurite, azurite_container)
    monkeypatch.setattr(AzureBlobStore, "append_new", failing(
        AzureBlobStore.append_new, "ws1/runs/run1.7/events.jsonl",
        StoreError("blob store: append ws1/runs/run1.7/events.jsonl failed: HTTP 503")))
    with pytest.raises(StoreError, match=r"^job1: writing run run1\.7 failed: blob store: "):
        sweep()
    assert null_local == []
    check_all_failed(get_store(get_session()), "run1.7", "HTTP 503")


# ---- user delegation key: fetched once for a sweep, not once per run ----------------------------
class _Blob:
    def __init__(self, name):
        self.blob_name, self.url = name, f"https://acct.blob.core.windows.net/c/{name}"


class _Container:
    container_name = "c"

    def get_blob_client(self, name):
        return _Blob(name)

    def create_container(self):
        pass


class _Service:
    account_name = "acct"

    def __init__(self):
        self.key_requests = []

    def get_container_client(self, name):
        return _Container()

    def get_user_delegation_key(self, start, expiry):
        from azure.storage.blob import UserDelegationKey
        self.key_requests.append((start, expiry))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid", "tid"
        key.signed_start = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2025-01-05"
        key.value = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="
        return key


@pytest.mark.parametrize("seconds", [3600, 8 * 24 * 3600])  # short; past the 7-day cap
def test_user_delegation_key_is_fetched_once_for_many_runs(seconds):
    from xt_magic.core.storage.azure_blob import MAX_SAS_SECONDS, AzureBlobStore
    svc = _Service()
    store = AzureBlobStore(svc, "c", aad=True)
    for i in range(30):
        access = store.node_access(read=["ws1/jobs/job1/bundle/cell.py"],
                                   write=[f"ws1/runs/run1.{i}/outputs/vars.pkl"],
                                   append=[f"ws1/runs/run1.{i}/events.jsonl"],
                                   expiry_seconds=seconds)
        assert len(access.urls) == 3
    assert len(svc.key_requests) == 1
    start, key_expiry = svc.key_requests[0]
    now = dt.datetime.now(dt.timezone.utc)
    assert key_expiry - now <= dt.timedelta(seconds=MAX_SAS_SECONDS)  # never past the 7 days
    assert key_expiry - now > dt.timedelta(seconds=min(seconds, MAX_SAS_SECONDS - 3600) - 60)
    query = dict(p.split("=", 1) for p in access.urls["ws1/jobs/job1/bundle/cell.py"]
                 .split("?", 1)[1].split("&"))
    from urllib.parse import unquote
    sas_expiry = dt.datetime.strptime(unquote(query["se"]), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc)
    assert sas_expiry <= key_expiry  # every SAS expires before the key that signed it
