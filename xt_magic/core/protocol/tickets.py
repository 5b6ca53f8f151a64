"""A run's ticket (stored, signed, holding no URL and no key) and its launch secret (never stored).

Stored ticket (``{ws}/runs/{run}/ticket.json``, docs/architecture.md "Runner ticket")::

    {"version": 2, "job", "run", "workspace", "bundle": {paths + sha256s}, "paths": {events, console,
     metrics, vars, files}, "hparams", "outputs", "env", "setup", "python", "workdir",
     "max_seconds", "sig": HMAC-SHA256(job key, canonical JSON of the rest)}

Launch secret, delivered only through the launch channel (process environment ``XT_LAUNCH``, a
0600 file named by ``XT_LAUNCH_FILE``, or a Batch task's environment settings)::

    {"key": "<hex job key>", "access": NodeAccess JSON (file root, or read/write/append URLs)}
"""
from __future__ import annotations

from ...runner.runner import canonical, sign_fields, verify_fields
from . import keys
from .access import NodeAccess
from .layout import Layout

VERSION = 2
WEEK = 7 * 24 * 3600

__all__ = ["VERSION", "build", "sign", "verify", "verify_event", "node_access", "launch_secret",
           "relaunch", "expiry_seconds", "job_access", "canonical"]


def build(layout: Layout, job: str, run: str, *, bundle: dict, hparams: dict | None = None,
          outputs: list | None = None, env: dict | None = None, setup: dict | None = None,
          python: str = "python3", max_seconds: int | None = None, paths: dict | None = None,
          workdir: str | None = None, capture: dict | None = None, kind: str = "cell") -> dict:
    """The (unsigned) ticket of one run; ``paths`` defaults to the run's own paths.
    ``capture`` ({"max_bytes": N}): record the cell's outputs and the run notebook; ``kind``:
    "cell", or "notebook" (the bundle's cell is an .ipynb run whole)."""
    return {"version": VERSION, "job": job, "run": run, "workspace": layout.ws,
            "bundle": dict(bundle), "paths": dict(paths or layout.run_paths(run)),
            "hparams": dict(hparams or {}), "outputs": list(outputs or []), "env": dict(env or {}),
            "setup": setup, "python": python, "workdir": workdir, "max_seconds": max_seconds,
            "capture": capture, "kind": kind}


def sign(ticket: dict, key: bytes) -> dict:
    body = {k: v for k, v in ticket.items() if k != "sig"}
    return dict(body, sig=sign_fields(key, body))


def verify(ticket: dict, key: bytes) -> bool:
    return verify_fields(key, ticket)


def verify_event(key: bytes, event: dict | None, job: str, run: str) -> bool:
    """A runner's final event, signed with this job's key, for exactly this job and run."""
    return (isinstance(event, dict) and event.get("job") == job and event.get("run") == run
            and verify_fields(key, event))


def _reads(bundle: dict) -> list[str]:
    b = bundle or {}
    return [p for p in (b.get("cell"), b.get("inputs"), b.get("cloudpickle"), b.get("snapshot"))
            if p]


def _writes(ticket: dict) -> tuple[list[str], list[str]]:
    p = ticket["paths"]
    write, append = [p["vars"], p["files"]], [p["events"], p["console"], p["metrics"]]
    if ticket.get("capture") and p.get("outputs"):
        write, append = write + [p["notebook"]], append + [p["outputs"]]
    return write, append


def _xt_paths(ticket: dict) -> tuple[list[str], list[str]]:
    """XT run features (core/jobs/xtrun.py): (reads: data/model files and a resumed run's
    checkpoint; read-writes: the run's own checkpoint, read back after a requeue)."""
    ck = ticket.get("checkpoint") or {}
    own = list((ck.get("write") or {}).values())
    reads = [p for p in (ck.get("read") or {}).values() if p not in own]  # a resumed run's
    for key in ("data", "model"):
        reads += list(((ticket.get(key) or {}).get("files") or {}).values())
    return reads, own


def expiry_seconds(max_seconds) -> int:
    """How long node access lasts: the run's limit (or a week) plus a day of queueing."""
    return int(max_seconds or WEEK) + 24 * 3600


def node_access(store, ticket: dict, shared: NodeAccess | None = None) -> NodeAccess:
    """What a node needs for this ticket and nothing more: read the bundle, write the outputs,
    append events/console/metrics. ``shared``: the job's read access, made once per job."""
    write, append = _writes(ticket)
    xt_reads, read_write = _xt_paths(ticket)
    xt_reads.append(ticket["paths"]["events"])  # read back: did an earlier attempt start?
    expiry = expiry_seconds(ticket.get("max_seconds"))
    if shared is None:
        return store.node_access(read=_reads(ticket.get("bundle")) + xt_reads, write=write,
                                 append=append, expiry_seconds=expiry, read_write=read_write)
    return shared.merge(store.node_access(read=xt_reads, write=write, append=append,
                                          expiry_seconds=expiry, read_write=read_write))


def job_access(store, bundle: dict, max_seconds=None) -> NodeAccess:
    """Read access to a job's bundle, shared by its runs (signed once per job)."""
    return store.node_access(read=_reads(bundle), write=[], append=[],
                             expiry_seconds=expiry_seconds(max_seconds))


def launch_secret(key: bytes, access: NodeAccess) -> dict:
    return {"key": key.hex(), "access": access.to_json()}


def relaunch(store, ticket: dict) -> dict:
    """The launch secret of a stored ticket made again on this machine (a run started a second
    time from its ticket: a requeue, a restarted driver): the job key is derived here, the access
    signed afresh, and only for a ticket whose signature verifies (never write access for paths
    a store writer chose)."""
    key = keys.job_key(store, ticket["workspace"], ticket["job"])
    if not verify(ticket, key):
        from ..errors import JobError
        raise JobError(f"{ticket.get('run')}: stored ticket signature does not verify; "
                       "not started")
    return launch_secret(key, node_access(store, ticket))
