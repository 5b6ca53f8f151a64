"""Build store layouts + runner tickets by hand, so runner/backend tests need no client code."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "xt_magic", "runner", "runner.py")
_CP_ZIP: list[bytes] = []
#: local ticket path -> the run's launch secret {"key", "access"} (never in the store)
LAUNCHES: dict[str, dict] = {}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cloudpickle_zip() -> bytes:
    """cloudpickle's own source as a zip (what the client ships as bundle/cloudpickle.zip)."""
    if not _CP_ZIP:
        import cloudpickle
        pkg = os.path.dirname(cloudpickle.__file__)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in os.listdir(pkg):
                if f.endswith(".py"):
                    zf.write(os.path.join(pkg, f), f"cloudpickle/{f}")
        _CP_ZIP.append(buf.getvalue())
    return _CP_ZIP[0]


def zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _write(root, path, data: bytes):
    full = os.path.join(root, *path.split("/"))
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as fh:
        fh.write(data)


def make_job(root, cell, *, job="job1", ws="ws1", runs=1, inputs=None, outputs=(), hparams=None,
             snapshot=None, setup=None, env=None, inputs_bytes=None, max_seconds=None,
             extra=None, capture_bytes=None):
    """Write a job's bundle and ``runs`` run tickets under the store ``root``.

    Returns a list of (run_id, local ticket path, ticket dict), each ticket signed with the job
    key a kernel derives (``job_key``: this test's $XT_HOME master key); the launch secrets are in ``LAUNCHES`` (``launch_env(path)``, ``secret(path)``). ``hparams``
    is one dict for all runs or a list with one dict per run; ``extra``: more ticket fields.
    """
    import cloudpickle
    from xt_magic.core.protocol import tickets
    bundle = {"cell": f"{ws}/jobs/{job}/bundle/cell.py", "inputs": None, "inputs_sha256": None,
              "cloudpickle": f"{ws}/jobs/{job}/bundle/cloudpickle.zip", "snapshot": None,
              "snapshot_sha256": None}
    _write(root, bundle["cell"], cell.encode())
    bundle["cell_sha256"] = sha(cell.encode())
    cp = cloudpickle_zip()
    _write(root, bundle["cloudpickle"], cp)
    bundle["cloudpickle_sha256"] = sha(cp)
    if inputs is not None or inputs_bytes is not None:
        data = inputs_bytes if inputs_bytes is not None else cloudpickle.dumps(inputs)
        bundle["inputs"] = f"{ws}/jobs/{job}/bundle/inputs.pkl"
        bundle["inputs_sha256"] = sha(cloudpickle.dumps(inputs)) if inputs is not None else sha(data)
        _write(root, bundle["inputs"], data)
    if snapshot is not None:
        data = zip_bytes(snapshot) if isinstance(snapshot, dict) else snapshot
        bundle["snapshot"] = f"snapshots/{sha(data)}.zip"
        bundle["snapshot_sha256"] = sha(data)
        _write(root, bundle["snapshot"], data)
    _write(root, f"{ws}/jobs/{job}/bundle/runner.py", open(RUNNER, "rb").read())
    out = []
    n = job[3:]
    for i in range(1, runs + 1):
        run = f"run{n}.{i}"
        base = f"{ws}/runs/{run}"
        hp = hparams[i - 1] if isinstance(hparams, list) else (hparams or {})
        ticket = {
            "version": 2, "job": job, "run": run, "workspace": ws, "bundle": bundle,
            "paths": {"events": f"{base}/events.jsonl", "console": f"{base}/console.txt",
                      "metrics": f"{base}/metrics.jsonl", "vars": f"{base}/outputs/vars.pkl",
                      "files": f"{base}/outputs/files.zip"},
            "hparams": hp, "outputs": list(outputs), "env": env or {}, "setup": setup,
            "python": sys.executable, "workdir": None, "max_seconds": max_seconds,
            **(extra or {}),
        }
        if capture_bytes:  # record cell outputs (outputs.jsonl + run.ipynb)
            ticket["capture"] = {"max_bytes": capture_bytes}
            ticket["paths"].update(outputs=f"{base}/outputs.jsonl", notebook=f"{base}/run.ipynb")
        ticket = tickets.sign(ticket, job_key(root, job, ws))
        data = json.dumps(ticket, indent=1).encode()
        _write(root, f"{base}/ticket.json", data)
        t = time.time()
        _write(root, f"{base}/events.jsonl",
               (json.dumps({"state": "created", "ts": t, "time": "x"}) + "\n").encode())
        tp = os.path.join(root, *base.split("/"), "ticket.json")
        LAUNCHES[str(tp)] = {"key": job_key(root, job, ws).hex(),
                             "access": {"kind": "file", "root": str(root)}}
        out.append((run, tp, ticket))
    return out


def job_key(root, job="job1", ws="ws1") -> bytes:
    """The key a kernel on this machine derives for a job in the file store at ``root``."""
    from xt_magic.core.protocol import keys
    from xt_magic.core.storage.file import FileStore
    return keys.job_key(FileStore(str(root)), ws, job, create=True)


def secret(ticket_path) -> dict:
    """The launch secret of a hand-built run (``make_job``)."""
    return LAUNCHES[str(ticket_path)]


def launch_env(ticket_path) -> dict:
    """os.environ plus XT_LAUNCH for running ``runner.py ticket_path`` by hand."""
    return dict(os.environ, XT_LAUNCH=json.dumps(secret(ticket_path)))


def launch_for(root, run, ticket, job=None, ws="ws1", max_seconds=None):
    """The compute.base.Launch of a hand-built run."""
    from xt_magic.core.compute.base import Launch
    tp = os.path.join(root, *f"{ws}/runs/{run}/ticket.json".split("/"))
    launch = LAUNCHES.get(str(tp)) or {"key": job_key(root, ticket["job"], ws).hex(),
                                       "access": {"kind": "file", "root": str(root)}}
    return Launch(run_id=run, job_id=job or ticket["job"], workspace=ws, ticket=ticket,
                  ticket_path=f"{ws}/runs/{run}/ticket.json", launch_secret=launch,
                  max_seconds=max_seconds)


def read(root, path, default=b"") -> bytes:
    try:
        with open(os.path.join(root, *path.split("/")), "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return default


def events(root, ticket) -> list[dict]:
    from xt_magic.core.protocol.events import parse as parse_events
    return parse_events(read(root, ticket["paths"]["events"]))


def state(root, ticket) -> dict:
    from xt_magic.core.protocol.events import fold
    return fold(events(root, ticket))


class DictConfig:
    """The slice of ResolvedConfig a backend reads (``get`` by dotted key), over a plain dict."""

    def __init__(self, data=None):
        self.data = data or {}

    def get(self, key, default=None):
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def events_reads(store_class=None):
    """Every read of a run's events.jsonl through the store class (default: FileStore) while
    inside, as (path, offset)."""
    if store_class is None:
        from xt_magic.core.storage.file import FileStore as store_class
    reads, real = [], store_class.read_from

    def counting(self, path, offset):
        if path.endswith("events.jsonl"):
            reads.append((path, offset))
        return real(self, path, offset)
    store_class.read_from = counting
    try:
        yield reads
    finally:
        store_class.read_from = real
