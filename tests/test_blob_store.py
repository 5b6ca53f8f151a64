"""AzureBlobStore against a real Azurite: round trip, listing, append, ranged reads, exclusive
create under a race, SAS scoping for runners, and a 200 MB parallel upload with progress."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.error
import urllib.request

import pytest

from xt_magic.core.errors import StoreError

pytestmark = pytest.mark.azurite


@pytest.fixture
def store(azurite, azurite_container):
    from xt_magic.core.session import get_session
    from xt_magic.core.storage.azure_blob import AzureBlobStore
    cfg = {"type": "storage", "provider": "azure-blob-21",
           "connection-string": azurite.connection_string, "container": azurite_container}
    return AzureBlobStore.from_config("teamstore", cfg, get_session())


def _http(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_round_trip_overwrite_delete(store):
    store.write_bytes("ws1/jobs/job1/job.json", b'{"a": 1}')
    assert store.read_bytes("ws1/jobs/job1/job.json") == b'{"a": 1}'
    store.write_bytes("ws1/jobs/job1/job.json", b"v2")
    assert store.read_bytes("ws1/jobs/job1/job.json") == b"v2"
    assert store.exists("ws1/jobs/job1/job.json")
    store.delete("ws1/jobs/job1/job.json")
    store.delete("ws1/jobs/job1/job.json")  # missing: no error
    assert not store.exists("ws1/jobs/job1/job.json")
    with pytest.raises(StoreError, match="not found"):
        store.read_bytes("ws1/jobs/job1/job.json")
    with pytest.raises(StoreError, match="bad store path"):
        store.write_bytes("../escape", b"x")
    assert "AccountKey" not in repr(store) and store.describe().startswith("azure-blob ")


def test_listing_is_by_folder(store):
    for path in ("ws1/runs/run1.1/events.jsonl", "ws1/runs/run1.1/outputs/vars.pkl",
                 "ws1/runs/run1.10/events.jsonl", "ws1/jobs/job1/job.json"):
        store.write_bytes(path, b"x")
    assert sorted(store.list("ws1/runs/run1.1")) == [
        "ws1/runs/run1.1/events.jsonl", "ws1/runs/run1.1/outputs/vars.pkl"]
    assert len(list(store.list("ws1"))) == 4
    assert len(list(store.list(""))) == 4
    assert list(store.list("nothing/here")) == []


def test_append_and_read_from(store):
    path = "ws1/runs/run1.1/events.jsonl"
    assert store.read_from(path, 0) == b""
    store.append(path, b"one\n")
    store.append(path, b"two\n")
    assert store.read_bytes(path) == b"one\ntwo\n"
    assert store.read_from(path, 4) == b"two\n"
    assert store.read_from(path, 8) == b""
    assert store.read_from(path, 100) == b""


def test_change_tokens_of_many_runs_in_one_listing(store, monkeypatch):
    """A Job's look at a sweep asks the blob store once for every live run's events token (not
    once per run); a token moves with an append, a missing run's is (), and a listing that would
    run past the bound leaves the paths after it to be read (None)."""
    from xt_magic.core.protocol.events import Watch
    from xt_magic.core.storage import azure_blob
    paths = [f"ws1/runs/run7.{i}/events.jsonl" for i in range(1, 7)]
    for path in paths[:5]:
        store.append(path, b'{"state": "created"}\n')
        store.write_bytes(path.replace("events.jsonl", "ticket.json"), b"{}")
    listings = []
    real = store._container.list_blobs
    monkeypatch.setattr(store._container, "list_blobs",
                        lambda **kw: listings.append(kw) or real(**kw))
    before = store.change_tokens(paths)
    assert len(listings) == 1 and listings[0]["name_starts_with"] == "ws1/runs/run7."
    assert before[paths[5]] == () and all(before[p][1] == 21 for p in paths[:5])
    watches = {p: Watch(store, p) for p in paths}
    for p in paths:
        watches[p].refresh(before[p])
    store.append(paths[2], b'{"state": "queued"}\n')
    after = store.change_tokens(paths)
    assert [p for p in paths if not watches[p].unchanged(after[p])] == [paths[2]]
    assert watches[paths[2]].refresh(after[paths[2]])
    assert [e["state"] for e in watches[paths[2]].events] == ["created", "queued"]
    monkeypatch.setattr(azure_blob, "LIST_TOKENS_PER_PATH", 1)  # 6 entries at most: 3 runs
    cut = store.change_tokens(paths)
    assert all(cut[p] for p in paths[:3]) and all(cut[p] is None for p in paths[3:])
    assert store.change_tokens(paths[:2]) == dict.fromkeys(paths[:2])  # too few to list


def test_create_exclusive_race(store):
    wins, barrier = [], threading.Barrier(8)

    def claim(i):
        barrier.wait()
        if store.create_exclusive("ws1/ids/job7", str(i).encode()):
            wins.append(i)
    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.read_bytes("ws1/ids/job7") == str(wins[0]).encode()
    assert store.create_exclusive("ws1/ids/job7", b"again") is False


def test_runner_sas_is_scoped_to_path_and_operation(store, azurite):
    store.write_bytes("ws1/jobs/job1/bundle/cell.py", b"print(1)")
    access = store.node_access(read=["ws1/jobs/job1/bundle/cell.py"],
                               write=["ws1/runs/run1.1/outputs/vars.pkl"],
                               append=["ws1/runs/run1.1/events.jsonl"], expiry_seconds=600)
    assert access.to_json()["kind"] == "urls" and len(access.urls) == 3 and store.remote
    assert access.local_path("ws1/jobs/job1/bundle/cell.py") is None
    text = json.dumps(access.to_json())
    assert azurite.key not in text and "AccountKey" not in text and "sig=" not in repr(access)
    read_url = access.urls["ws1/jobs/job1/bundle/cell.py"]
    write_url = access.urls["ws1/runs/run1.1/outputs/vars.pkl"]
    append_url = access.urls["ws1/runs/run1.1/events.jsonl"]
    assert "sp=r&" in read_url and "sp=cw&" in write_url and "sp=acw&" in append_url
    block = {"x-ms-blob-type": "BlockBlob"}

    assert _http("GET", read_url) == (200, b"print(1)")
    # a read-only SAS cannot write
    assert _http("PUT", read_url, b"evil", block)[0] == 403
    assert store.read_bytes("ws1/jobs/job1/bundle/cell.py") == b"print(1)"
    # the write SAS writes its own path ...
    assert _http("PUT", write_url, b"vars", block)[0] == 201
    assert store.read_bytes("ws1/runs/run1.1/outputs/vars.pkl") == b"vars"
    # ... but cannot read it, nor write any other path (outside the job's allowed paths)
    assert _http("GET", write_url)[0] == 403
    base, sas = write_url.split("?", 1)
    elsewhere = base.replace("run1.1/outputs/vars.pkl", "run1.2/outputs/vars.pkl") + "?" + sas
    assert _http("PUT", elsewhere, b"evil", block)[0] == 403
    assert not store.exists("ws1/runs/run1.2/outputs/vars.pkl")
    overwrite_input = base.replace("runs/run1.1/outputs/vars.pkl", "jobs/job1/bundle/cell.py")
    assert _http("PUT", overwrite_input + "?" + sas, b"evil", block)[0] == 403
    # the append SAS creates the append blob and appends blocks
    assert _http("PUT", append_url, b"", {"x-ms-blob-type": "AppendBlob"})[0] == 201
    assert _http("PUT", append_url.replace("?", "?comp=appendblock&", 1), b"e1\n")[0] == 201
    assert store.read_bytes("ws1/runs/run1.1/events.jsonl") == b"e1\n"


def test_parallel_upload_200mb_with_progress(store, tmp_path):
    size = 200 * 1024 * 1024
    src = tmp_path / "snapshot.bin"
    chunk = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    with open(src, "wb") as fh:
        for i in range(size // len(chunk)):
            piece = bytes([i % 256]) + chunk[1:]
            fh.write(piece)
            digest.update(piece)
    calls = []
    store.upload_file("snapshots/big.zip", str(src), progress=lambda d, t: calls.append((d, t)))
    assert len(calls) >= 10  # one per block at least
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == size and all(t == size for _, t in calls)
    out = tmp_path / "back.bin"
    store.download_file("snapshots/big.zip", str(out))
    back = hashlib.sha256()
    with open(out, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            back.update(piece)
    assert back.hexdigest() == digest.hexdigest()


def test_wrong_key_is_an_auth_error_without_the_key(azurite, azurite_container):
    import base64
    from xt_magic.core.errors import AuthError, XTError
    from xt_magic.core.session import get_session
    from xt_magic.core.storage.azure_blob import AzureBlobStore
    bad = base64.b64encode(b"definitely-not-the-key-0123456789").decode()
    store = AzureBlobStore.from_config("s", {
        "name": azurite.account, "url": azurite.blob_endpoint, "key": bad,
        "container": azurite_container}, get_session())
    with pytest.raises(XTError) as info:
        store.write_bytes("ws1/x", b"x")
    assert isinstance(info.value, (AuthError, StoreError)) and "HTTP 4" in str(info.value) \
        or isinstance(info.value, AuthError)
    assert bad not in str(info.value) and "\n" not in str(info.value)


def test_default_progress_bar_for_big_uploads(store, tmp_path, capsys):
    src = tmp_path / "mid.bin"
    src.write_bytes(os.urandom(17 * 1024 * 1024))
    store.upload_file("snapshots/mid.zip", str(src))
    assert "mid.bin" in capsys.readouterr().err  # the tqdm.auto bar, labelled with the file
    assert store.read_bytes("snapshots/mid.zip") == src.read_bytes()
