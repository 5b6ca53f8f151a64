"""Jobs: submit a cell (``run_cell``) and the verbs over jobs in the store.

Everything lives in the store (job.json, bundle, tickets, events, console, metrics, outputs), so a
new kernel lists, monitors, cancels and fetches jobs it never submitted. States come from the run
events; verbs ask the backend to ``poll`` (reconcile) first, so a dead process shows as failed.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import reprlib
import sys
import time
from collections import Counter

from ..auth import jobenv
from ..errors import JobError, StoreError, XTError
from . import ids, packaging, snapshot, states, sweeps
from .records import JobRecord, Layout

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WEEK = 7 * 24 * 3600


# ---- context ----------------------------------------------------------------------------------
class _Ctx:
    """Resolved config, store and layout for one call."""

    def __init__(self, session, cfg=None):
        from ..storage import get_store
        self.session = session
        self.cfg = cfg or session.config()
        self.store = get_store(session, self.cfg)
        self.ws = str(self.cfg.get("general.workspace") or "ws1")
        self.layout = Layout(self.ws)

    def backend(self, target: str | None):
        from ..compute import get_backend
        return get_backend(self.session, target, self.cfg)


def _norm_job(text: str) -> str:
    text = str(text).strip()
    return f"job{text}" if text.isdigit() else text


def _split_id(text: str) -> tuple[str, str | None]:
    """``job3`` -> (job3, None); ``run3.2`` -> (job3, run3.2)."""
    text = _norm_job(text)
    job = ids.job_of_run(text)
    if job:
        return job, text
    if ids.job_number(text) is None:
        raise JobError(f"{reprlib.repr(text)} is not a job or run id",
                       hint="job ids look like job3, runs run3.1")
    return text, None


# ---- submit -------------------------------------------------------------------------------------
def run_cell(session, source: str, namespace: dict, *, target=None, setup=None, name=None,
             inputs=None, outputs=None, hp=None, hp_config=None, search=None, runs=None,
             repeat=None, env=None, code_dir=None, wait=False, tags=None, dry_run=False,
             max_seconds=None, seed=None, out=None, env_secret=None):
    """Package the cell, write the job to the store, hand its runs to the backend; return a Job."""
    packaging.check_source(source)
    if max_seconds is not None and max_seconds < 1:
        raise JobError(f"--max-seconds {max_seconds}: expected a positive number of seconds")
    outputs = [sweeps.check_name(n, "output") for n in (outputs or [])]
    ctx = _Ctx(session)
    cfg = ctx.cfg
    backend = ctx.backend(target)

    setup_name = setup or backend.target.get("setup")
    setup_cfg = cfg.get(f"setups.{setup_name}") if setup_name else None
    if setup and not isinstance(setup_cfg, dict):
        raise JobError(f"no setup {setup!r}", key="setups",
                       hint="known: " + ", ".join(sorted(cfg.get("setups") or {})))
    setup_ticket = packaging.resolve_setup(setup_name, setup_cfg)

    specs = sweeps.load_specs(hp, hp_config)  # --hp wins over the file
    seed = 0 if seed is None else int(seed)
    search_used, points = sweeps.expand(specs, search, runs, repeat, seed,
                                        limit=cfg.get("hyperparameter-search.max-runs-limit"))

    from ...runner.runner import hp_namespace  # the names a run's cell gets for its hparams
    input_values = packaging.choose_inputs(source, namespace, inputs,
                                           exclude=set(hp_namespace(dict.fromkeys(specs))))
    run_env = jobenv.explicit_env(_job_env(cfg, env), env_secret, from_flag=env)

    code_dirs = code_dir or (cfg.get("code.code-dirs") if cfg.get("code.code-upload", True) else None)
    omit = cfg.get("code.code-omit") or []
    cwd = session.cwd or os.getcwd()
    # never snapshot the store itself or XT_HOME (envs, caches) when they sit under a code dir
    skip = (getattr(ctx.store, "root", None),
            os.environ.get("XT_HOME") or os.path.expanduser("~/.xt"))
    if dry_run:
        return Preview(backend.name, points, sorted(input_values), outputs,
                       snapshot.plan(code_dirs, omit, cwd, skip) if code_dirs else None,
                       setup_ticket)

    inputs_pkl = packaging.pickle_inputs(input_values, cwd) if input_values else None
    limit = cfg.get("code.max-snapshot-mb")
    snap = snapshot.build(ctx.store, code_dirs, omit, cwd,
                          max_bytes=None if limit is None else int(float(limit) * 2**20),
                          zip_mode=cfg.get("code.code-zip") or "fast", skip_dirs=skip
                          ) if code_dirs else None

    store, lay = ctx.store, ctx.layout
    job_id = ids.allocate_job_id(store, ctx.ws)
    run_ids = [ids.run_id(job_id, i + 1) for i in range(len(points))]
    bundle = {"cell": lay.bundle(job_id, "cell.py"), "cloudpickle": lay.bundle(job_id, "cloudpickle.zip"),
              "runner": lay.bundle(job_id, "runner.py"),
              "inputs": lay.bundle(job_id, "inputs.pkl") if inputs_pkl else None}
    store.write_bytes(bundle["cell"], source.encode())
    cp_zip = packaging.cloudpickle_zip()
    cp_sha = packaging.sha256(cp_zip)
    store.write_bytes(bundle["cloudpickle"], cp_zip)
    store.write_bytes(bundle["runner"], packaging.runner_source())
    if inputs_pkl:
        store.write_bytes(bundle["inputs"], inputs_pkl)

    python = (setup_ticket or {}).get("python") or (sys.executable if backend.kind == "local"
                                                    else "python3")
    record = JobRecord(
        job=job_id, workspace=ctx.ws, target=backend.name, backend=backend.kind,
        submitted=states.now_iso(), user=str(cfg.get("general.username") or getpass.getuser()),
        name=name, runs=run_ids, hparams=points, outputs=outputs, inputs=sorted(input_values),
        search=search_used, setup=setup_name, snapshot=snap.path if snap else None,
        tags=dict(tags or {}), python=".".join(map(str, sys.version_info[:2])),
        extra={"seed": seed, "max_seconds": max_seconds, "env_keys": sorted(run_env)})
    record.save(store)

    from ..compute.base import Launch
    # per job, not per run: the read paths, the inputs' checksum and the read SASes are shared
    expiry = (max_seconds or _WEEK) + 24 * 3600
    reads = [p for p in (bundle["cell"], bundle["inputs"], bundle["cloudpickle"], bundle["runner"],
                         snap.path if snap else None) if p]
    inputs_sha = packaging.sha256(inputs_pkl) if inputs_pkl else None
    shared_urls = None  # the read SASes, signed once below when the store hands out URLs
    # a new run's events blob does not exist yet: the blob store creates it and appends (2 round
    # trips, not append-404-create-append's 3); other stores just append
    append_new = getattr(store, "append_new", store.append)

    def write_run(run: str, point: dict) -> Launch:
        paths = lay.run_paths(run)
        append_new(paths["events"], states.make_event(states.CREATED, job=job_id, run=run))
        write, append = [paths["vars"], paths["files"]], [paths["events"], paths["console"],
                                                          paths["metrics"]]
        if shared_urls is None:
            io = store.runner_io(read=reads, write=write, append=append, expiry_seconds=expiry)
        else:
            own = store.runner_io(read=[], write=write, append=append, expiry_seconds=expiry)
            io = {"kind": "urls", "urls": {**shared_urls, **own["urls"]}}
        ticket = {
            "version": 1, "job": job_id, "run": run, "workspace": ctx.ws, "io": io,
            "bundle": {"cell": bundle["cell"], "inputs": bundle["inputs"],
                       "inputs_sha256": inputs_sha,
                       "cloudpickle": bundle["cloudpickle"], "cloudpickle_sha256": cp_sha,
                       "snapshot": snap.path if snap else None,
                       "snapshot_sha256": snap.sha256 if snap else None},
            "paths": paths, "hparams": point, "outputs": outputs, "env": run_env,
            "setup": setup_ticket, "python": python, "workdir": None, "max_seconds": max_seconds,
        }
        ticket_path = lay.run(run, "ticket.json")
        store.write_bytes(ticket_path, json.dumps(ticket).encode())  # compact: C encoder
        return Launch(run_id=run, ticket=ticket, ticket_path=ticket_path,
                      runner_path=bundle["runner"], max_seconds=max_seconds)

    # every run's created event and ticket are in the store before the backend sees any run (so
    # `created` precedes the backend's `queued`); if one write fails nothing is submitted and every
    # run of the job gets `failed`
    workers = _store_workers(store, len(run_ids))
    try:
        shared = store.runner_io(read=reads, write=[], append=[], expiry_seconds=expiry)
        shared_urls = shared["urls"] if shared.get("kind") == "urls" else None
        launches = _each_run(write_run, list(zip(run_ids, points)), workers)
    except BaseException as err:
        if isinstance(err, _RunError):
            error = _run_error(job_id, err)
        elif isinstance(err, Exception):
            error = err if isinstance(err, XTError) else JobError(
                f"{job_id}: writing its runs failed: {type(err).__name__}: {err}")
        else:  # Ctrl-C
            _mark_failed(store, lay, run_ids, "submit interrupted", workers)
            raise
        _mark_failed(store, lay, run_ids, f"submit failed: {error.message}", workers)
        if error is err:
            raise
        raise error from getattr(err, "cause", err)
    try:
        backend.submit(job_id, launches)
    except Exception as err:
        _mark_failed(store, lay, run_ids, f"submit failed: {err}", workers)
        if isinstance(err, XTError):
            raise
        raise JobError(f"{backend.name}: submitting {job_id} failed: {err}") from err
    job = Job(session, record)
    if wait:
        job.wait(out=out)
        # the user declared --outputs and chose to wait: the values belong in the notebook
        return job.results(into=namespace if outputs else None)
    return job


#: Per-run store round trips (at submit each run's `created` event and ticket, then each run's
#: events read by the Job handle) run on this many threads when the store is remote.
SUBMIT_WORKERS = 16
#: Stores whose per-run reads and writes stay in order on the calling thread (local files: threads
#: only add overhead there; bench/bench_submit.py).
SEQUENTIAL_STORES = ("file",)


def _store_workers(store, runs: int) -> int:
    if getattr(store, "kind", "") in SEQUENTIAL_STORES:
        return 1
    return max(1, min(int(SUBMIT_WORKERS), runs))


class _RunError(Exception):
    """The store work of run ``run`` failed with ``cause``; ``failed`` runs failed in all."""

    def __init__(self, run: str, cause: BaseException, failed: int = 1):
        super().__init__(run, cause)
        self.run, self.cause, self.failed = run, cause, failed


def _each_run(fn, items: list[tuple], workers: int) -> list:
    """``fn(run, ...)`` for each item, on up to ``workers`` threads; results in item order.

    The first failure stops every call not yet started and waits for those under way; then the
    failure of the earliest run is raised as a ``_RunError``. Ctrl-C does the same and is
    re-raised as it is.
    """
    if workers <= 1:
        out = []
        for item in items:
            try:
                out.append(fn(*item))
            except Exception as err:
                raise _RunError(item[0], err) from err
        return out
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xt-store")
    try:
        futures = [pool.submit(fn, *item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [(item[0], f.exception()) for item, f in zip(items, futures)
              if not f.cancelled() and f.exception() is not None]
    if errors:
        run, err = errors[0]
        raise _RunError(run, err, len(errors)) from err
    return [f.result() for f in futures]


def _run_error(job_id: str, err: _RunError) -> XTError:
    """One error naming the run (the store's own error type kept: StoreError, AuthError...)."""
    cause = err.cause
    more = f" (and {err.failed - 1} more runs)" if err.failed > 1 else ""
    if isinstance(cause, XTError) and type(cause).__init__ is XTError.__init__:
        return type(cause)(f"{job_id}: writing run {err.run} failed{more}: {cause.message}",
                           hint=cause.hint, key=cause.key)
    return JobError(f"{job_id}: writing run {err.run} failed{more}: "
                    f"{type(cause).__name__}: {cause}")


def _mark_failed(store, lay: Layout, run_ids: list[str], reason: str, workers: int) -> None:
    """Append `failed` to every run (best effort: the error that got us here is the one raised)."""
    event = states.make_event(states.FAILED, reason=reason)

    def fail(run: str) -> None:
        store.append(lay.run(run, "events.jsonl"), event)
    try:
        _each_run(fail, [(run,) for run in run_ids], workers)
    except (_RunError, KeyboardInterrupt):
        pass


def _job_env(cfg, extra: dict | None) -> dict:
    """general.env-vars + --env, as strings; names checked; never a $vault secret."""
    env = {}
    for source, values in (("general.env-vars", cfg.get("general.env-vars") or {}),
                           ("--env", extra or {})):
        for key, value in values.items():
            if not _ENV_NAME.match(str(key)):
                raise JobError(f"{source}: bad environment variable name {key!r}")
            if type(value).__name__ == "VaultRef":
                raise JobError(f"{source}: {key} is a $vault secret; secrets are never put in a "
                               "job's environment")
            env[str(key)] = "" if value is None else str(value)
    return env


class Preview:
    """What ``--dry-run`` would submit: runs, inputs, outputs, snapshot files and size."""

    def __init__(self, target, points, inputs, outputs, snap, setup):
        self.target, self.points, self.inputs, self.outputs, self.snapshot, self.setup = (
            target, points, inputs, outputs, snap, setup)

    def __repr__(self) -> str:
        lines = [f"dry run: {len(self.points)} run(s) on target {self.target!r}",
                 f"inputs: {', '.join(self.inputs) or '-'}   outputs: {', '.join(self.outputs) or '-'}"]
        if self.setup:
            lines.append(f"setup: {self.setup['name']} pip={self.setup['pip-packages']}")
        for i, p in enumerate(self.points[:20], 1):
            lines.append(f"  run {i}: {p}")
        if len(self.points) > 20:
            lines.append(f"  ... and {len(self.points) - 20} more runs")
        lines.append(self.snapshot.describe() if self.snapshot else "code snapshot: none")
        return "\n".join(lines)


# ---- Job handle ---------------------------------------------------------------------------------
class Job:
    """A submitted job: id, target, runs and their states (from the store). Works in any kernel."""

    def __init__(self, session, record: JobRecord):
        self.session, self.record = session, record
        self.id = record.job
        self._info: dict[str, dict] = {}
        self._read()

    # internals
    def _ctx(self) -> _Ctx:
        return _Ctx(self.session)

    def _read(self) -> None:
        store, lay = self._ctx().store, Layout(self.record.workspace)
        live = [run for run in self.record.runs
                if not (run in self._info and self._info[run]["state"] in states.FINAL)]

        def read(run: str) -> dict:
            events = store.read_from(lay.run(run, "events.jsonl"), 0)
            return states.fold(states.parse_events(events))
        try:  # one read per run: concurrent on a remote store
            infos = _each_run(read, [(run,) for run in live], _store_workers(store, len(live)))
        except _RunError as err:
            cause = err.cause
        else:
            self._info.update(zip(live, infos))
            return
        raise cause  # the store's own error, as before

    def _backend(self):
        return self._ctx().backend(self.record.target)

    # public
    @property
    def runs(self) -> list[str]:
        return list(self.record.runs)

    @property
    def target(self) -> str:
        return self.record.target

    def refresh(self) -> "Job":
        """Reconcile with the backend (dead processes become failed) and re-read the states."""
        self._read()
        live = [r for r in self.record.runs if self._info[r]["state"] not in states.FINAL]
        if live:
            self._backend().poll(self.id, live)
            self._read()
        return self

    def state(self, run: str) -> str:
        return self._info[run]["state"]

    def info(self, run: str) -> dict:
        return self._info[run]

    def states(self) -> Counter:
        return Counter(self._info[r]["state"] for r in self.record.runs)

    @property
    def done(self) -> bool:
        return all(self._info[r]["state"] in states.FINAL for r in self.record.runs)

    @property
    def status(self) -> str:
        """One word for the job: running while any run is live, else failed/cancelled/completed."""
        counts = self.states()
        for s in (states.RUNNING, states.QUEUED, states.CREATED, states.FAILED, states.CANCELLED):
            if counts.get(s):
                return s
        return states.COMPLETED

    def wait(self, timeout: float | None = None, progress: bool = True, out=None) -> "Job":
        """Block until every run is final, showing progress (tqdm.auto if installed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        total = len(self.record.runs)
        bar = _Progress(total, f"{self.id}", enabled=progress, out=out)
        delay = 0.05
        try:
            while True:
                self.refresh()
                counts = self.states()
                bar.update(sum(counts[s] for s in states.FINAL), _summary(counts))
                if self.done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise JobError(f"{self.id}: not finished after {timeout}s ({_summary(counts)})")
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)
        finally:
            bar.close()
        return self

    def results(self, into: dict | None = None, raise_errors: bool = False) -> "Results":
        return results(self.session, self.id, into=into, raise_errors=raise_errors)

    def cancel(self) -> "Job":
        return cancel(self.session, self.id)

    def logs(self, run: str | None = None, follow: bool = False, out=None):
        return logs(self.session, run or self.record.runs[0], follow=follow, out=out)

    def metrics(self):
        return metrics(self.session, self.id)

    def rows(self) -> list[dict]:
        out = []
        for run, hp in zip(self.record.runs, self.record.hparams or [{}] * len(self.record.runs)):
            info = self._info[run]
            why = info.get("reason") or (info.get("error") or {}).get("type")
            out.append({"run": run, "state": info["state"], "hparams": hp,
                        "started": info.get("started"), "ended": info.get("ended"),
                        "exit_code": info.get("exit_code"), "reason": why})
        return out

    def __repr__(self) -> str:
        head = (f"Job {self.id}{' ' + repr(self.record.name) if self.record.name else ''} on "
                f"{self.record.target}: {len(self.record.runs)} run(s), {_summary(self.states())}")
        lines = [head]
        for row in self.rows()[:20]:
            hp = f" {row['hparams']}" if row["hparams"] else ""
            why = f" ({row['reason']})" if row["reason"] else ""
            lines.append(f"  {row['run']:<12} {row['state']:<10}{hp}{why}")
        if len(self.record.runs) > 20:
            lines.append(f"  ... {len(self.record.runs) - 20} more runs")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape
        rows = "".join(
            f"<tr><td>{escape(r['run'])}</td><td>{escape(r['state'])}</td>"
            f"<td>{escape(json.dumps(r['hparams'])) if r['hparams'] else ''}</td>"
            f"<td>{escape(str(r['reason'] or ''))}</td></tr>" for r in self.rows()[:50])
        more = (f"<tr><td colspan=4>... {len(self.record.runs) - 50} more runs</td></tr>"
                if len(self.record.runs) > 50 else "")
        return (f"<div><b>Job {escape(self.id)}</b> {escape(self.record.name or '')} on "
                f"<code>{escape(self.record.target)}</code>: {len(self.record.runs)} run(s), "
                f"{escape(_summary(self.states()))}<table><tr><th>run</th><th>state</th>"
                f"<th>hparams</th><th>reason</th></tr>{rows}{more}</table></div>")


def _summary(counts: Counter) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in states.STATES if counts.get(s)) or "no runs"


class _Progress:
    """tqdm.auto when installed, else one rewritten text line."""

    def __init__(self, total: int, desc: str, enabled: bool = True, out=None):
        self.total, self.desc, self.enabled, self.out = total, desc, enabled, out
        self.bar, self.last = None, None
        if enabled and out is None:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="run", leave=True)
            except ImportError:
                pass

    def update(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
        elif (done, text) != self.last:
            print(f"\r{self.desc}: {done}/{self.total} done ({text})", end="",
                  file=self.out or sys.stdout, flush=True)
        self.last = (done, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.last is not None:
            print(file=self.out or sys.stdout)


# ---- verbs --------------------------------------------------------------------------------------
def get_job(session, job_id: str) -> Job:
    """The Job for an id in the configured workspace (re-attach after a kernel restart)."""
    ctx = _Ctx(session)
    job, _ = _split_id(job_id)
    return Job(session, JobRecord.load(ctx.store, ctx.ws, job))


def _all_records(ctx: _Ctx) -> list[JobRecord]:
    out = []
    for path in ctx.store.list(f"{ctx.ws}/jobs"):
        parts = path.split("/")
        if len(parts) == 4 and parts[3] == "job.json":
            try:
                out.append(JobRecord.from_json(ctx.store.read_bytes(path)))
            except (StoreError, ValueError, TypeError):
                continue  # a job being written by another kernel right now
    return sorted(out, key=lambda r: ids.job_number(r.job) or 0)


def list_jobs(session, status: str | None = None, last: int | None = None):
    """Jobs in the workspace, oldest first (DataFrame when pandas is installed, else rows)."""
    if status and status not in states.STATES:
        raise JobError(f"unknown status {status!r}", hint="one of: " + ", ".join(states.STATES))
    if last is not None and last < 1:
        raise JobError(f"--last {last}: expected a positive number of jobs")
    ctx = _Ctx(session)
    records = _all_records(ctx)
    if last:
        records = records[-last:]
    rows = []
    for record in records:
        job = Job(session, record)
        if not job.done:
            try:
                job.refresh()
            except XTError:
                pass  # target not reachable now: show what the store says
        counts = job.states()
        if status and not counts.get(status):
            continue
        rows.append({"job": record.job, "name": record.name, "target": record.target,
                     "submitted": record.submitted, "runs": len(record.runs),
                     "status": job.status, "states": _summary(counts)})
    return _frame(rows, ["job", "name", "target", "submitted", "runs", "status", "states"])


def _frame(rows: list[dict], columns: list[str]):
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows, columns=columns)


def _check_run(job, run: str) -> None:
    if run not in job.record.runs:
        raise JobError(f"{job.id} has no run {run}", hint=f"runs: {', '.join(job.runs[:10])}")


def status(session, job_or_run: str):
    """A refreshed Job, or for a run id the run's folded state (dict)."""
    job_id, run = _split_id(job_or_run)
    job = get_job(session, job_id).refresh()
    if run is None:
        return job
    _check_run(job, run)
    info = {k: v for k, v in job.info(run).items() if k != "events"}
    return {"run": run, **info}


def logs(session, run_id: str, follow: bool = False, out=None, poll_seconds: float = 0.5):
    """Print a run's console (a job id means its first run); ``follow`` until the run ends."""
    out = out or sys.stdout
    job_id, run = _split_id(run_id)
    job = get_job(session, job_id)
    run = run or job.record.runs[0]
    if run not in job.record.runs:
        raise JobError(f"{job_id} has no run {run}")
    store = job._ctx().store
    path = Layout(job.record.workspace).run(run, "console.txt")
    offset = 0
    while True:
        chunk = store.read_from(path, offset)
        if chunk:
            offset += len(chunk)
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        if not follow:
            return None
        if job.refresh().info(run)["state"] in states.FINAL:
            tail = store.read_from(path, offset)
            if tail:
                out.write(tail.decode("utf-8", "replace"))
            return None
        time.sleep(poll_seconds)


def cancel(session, job_or_run: str) -> Job:
    """Cancel a job's live runs, or one run."""
    job_id, run = _split_id(job_or_run)
    job = get_job(session, job_id)
    if run:
        _check_run(job, run)
    targets = [run] if run else job.record.runs
    live = [r for r in targets if job.info(r)["state"] not in states.FINAL]
    if live:
        job._backend().cancel(job_id, live)
    return job.refresh()


# ---- results ------------------------------------------------------------------------------------
class RunFailed(JobError):
    """A run's cell raised: the remote exception type and message, with the remote traceback."""

    def __init__(self, run: str, error: dict | None, reason: str | None = None):
        self.run, self.error = run, error or {}
        self.remote_type = self.error.get("type") or "Error"
        self.remote_message = self.error.get("message") or reason or "failed"
        self.remote_traceback = self.error.get("traceback") or ""
        super().__init__(f"run {run} failed: {self.remote_type}: {self.remote_message}")

    def _render_traceback_(self):
        tb = self.remote_traceback.rstrip("\n")
        lines = [f"{type(self).__name__}: {JobError.__str__(self)}"]
        if tb:
            lines += ["", f"Remote traceback (run {self.run}):"] + tb.splitlines()
        return lines

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip("\n")
        return text


class RunResult:
    """One run's outcome: state, hparams, output variables, extracted files dir, error."""

    def __init__(self, run, state, hparams, variables, files_dir, error, reason):
        self.run, self.state, self.hparams, self.variables = run, state, hparams, variables
        self.files_dir, self.error, self.reason = files_dir, error, reason

    def __getitem__(self, name):
        if name not in self.variables:
            self.raise_error()
            if self.state != states.COMPLETED:
                raise JobError(f"run {self.run} is {self.state}: no output variables yet")
            raise JobError(f"run {self.run} has no output variable {name!r}",
                           hint="declare it with --outputs")
        return self.variables[name]

    def raise_error(self) -> None:
        if self.state == states.FAILED:
            raise RunFailed(self.run, self.error, self.reason)

    def __repr__(self) -> str:
        bits = [f"{self.run}: {self.state}"]
        if self.hparams:
            bits.append(f"hparams={self.hparams}")
        if self.variables:
            bits.append("vars: " + ", ".join(f"{k}={_short(v)}" for k, v in self.variables.items()))
        if self.files_dir:
            bits.append(f"files: {self.files_dir}")
        if self.error:
            bits.append(f"error: {self.error.get('type')}: {self.error.get('message')}")
        elif self.reason:
            bits.append(f"reason: {self.reason}")
        return "  ".join(bits)


def _short(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


class Results:
    """A job's results: ``res["score"]`` (one-run job) or ``res.runs["run3.2"]["score"]``."""

    def __init__(self, job: Job, runs: list[RunResult]):
        self.job, self.runs_list = job, runs
        self.runs = {r.run: r for r in runs}

    @property
    def variables(self) -> dict:
        return {r.run: r.variables for r in self.runs_list}

    @property
    def errors(self) -> dict:
        return {r.run: r.error for r in self.runs_list if r.error}

    def __getitem__(self, key):
        if key in self.runs:
            return self.runs[key]
        if len(self.runs_list) == 1:
            return self.runs_list[0][key]
        return {r.run: r.variables.get(key) for r in self.runs_list}

    def __iter__(self):
        return iter(self.runs_list)

    def __len__(self) -> int:
        return len(self.runs_list)

    def __repr__(self) -> str:
        more = len(self.runs_list) - 50
        return "\n".join([f"Results of {self.job.id} ({_summary(self.job.states())})"]
                         + [f"  {r!r}" for r in self.runs_list[:50]]
                         + ([f"  ... {more} more runs"] if more > 0 else []))

    def _repr_html_(self) -> str:
        from html import escape
        rows = []
        for r in self.runs_list[:50]:
            variables = ", ".join(f"{k}={_short(v)}" for k, v in r.variables.items())
            err = f"{r.error.get('type')}: {r.error.get('message')}" if r.error else (r.reason or "")
            rows.append(f"<tr><td>{escape(r.run)}</td><td>{escape(r.state)}</td>"
                        f"<td>{escape(json.dumps(r.hparams)) if r.hparams else ''}</td>"
                        f"<td>{escape(variables)}</td><td>{escape(r.files_dir or '')}</td>"
                        f"<td>{escape(err)}</td></tr>")
        return (f"<div><b>Results of {escape(self.job.id)}</b><table><tr><th>run</th><th>state"
                f"</th><th>hparams</th><th>variables</th><th>files</th><th>error</th></tr>"
                + "".join(rows) + "</table></div>")


def _checked(store, path: str, sha: str | None, what: str) -> bytes | None:
    """Read an output only from the run's own store path, and only if its sha256 matches."""
    if not store.exists(path):
        return None
    data = store.read_bytes(path)
    if not sha or packaging.sha256(data) != sha:
        raise JobError(f"{what} at {path} does not match the checksum its run recorded; not loaded")
    return data


def safe_extract(data: bytes, dest: str) -> list[str]:
    """Extract a zip refusing ``..``, absolute paths, drive letters and links."""
    import io
    import stat
    import zipfile
    real_dest = os.path.realpath(dest)
    names = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            mode = info.external_attr >> 16
            if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":") \
                    or stat.S_ISLNK(mode):
                raise JobError(f"refusing unsafe path in output files: {name!r}")
            target = os.path.realpath(os.path.join(real_dest, *[p for p in parts if p]))
            if not (target == real_dest or target.startswith(real_dest + os.sep)):
                raise JobError(f"refusing unsafe path in output files: {name!r}")
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = os.path.join(real_dest, *[p for p in info.filename.split("/") if p])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                dst.write(src.read())
            names.append(info.filename)
    return names


def results(session, job_id: str, into: dict | None = None, raise_errors: bool = False,
            wait: bool = False) -> Results:
    """Output variables (unpickled after a checksum check), files (safely extracted under
    ``general.run-cache-dir``), and errors of a job's runs. ``into``: put variables into that
    namespace (one-run job: ``name``; sweeps: ``name`` = {run: value}). ``raise_errors``:
    re-raise the first failed run's exception with its remote traceback."""
    job_id, only = _split_id(job_id)
    job = get_job(session, job_id)
    if wait:
        job.wait()
    else:
        job.refresh()
    ctx = job._ctx()
    store, lay = ctx.store, Layout(job.record.workspace)
    cache = str(ctx.cfg.get("general.run-cache-dir") or os.path.join(
        os.environ.get("XT_HOME") or os.path.expanduser("~/.xt"), "runs-cache"))
    out = []
    hps = job.record.hparams or [{}] * len(job.record.runs)
    for run, hp in zip(job.record.runs, hps):
        if only and run != only:
            continue
        if ids.job_of_run(run) != job.id:  # only this job's own run paths are ever loaded
            raise JobError(f"{job.id}: job.json lists a foreign run {run!r}; not loaded")
        info = job.info(run)
        final = next((e for e in reversed(info["events"]) if e.get("state") == info["state"]), {})
        variables, files_dir = {}, None
        if info["state"] == states.COMPLETED:
            paths = lay.run_paths(run)
            data = _checked(store, paths["vars"], final.get("vars_sha256"), "output variables")
            if data is not None:
                import cloudpickle
                variables = cloudpickle.loads(data)
            zdata = _checked(store, paths["files"], final.get("files_sha256"), "output files")
            if zdata is not None:
                files_dir = os.path.join(os.path.expanduser(cache), job.record.workspace, run)
                os.makedirs(files_dir, exist_ok=True)
                safe_extract(zdata, files_dir)
        out.append(RunResult(run, info["state"], hp, variables, files_dir, info.get("error"),
                             info.get("reason")))
    res = Results(job, out)
    if into is not None:
        if len(out) == 1:
            into.update(out[0].variables)
        else:
            names = {k for r in out for k in r.variables}
            into.update({k: {r.run: r.variables[k] for r in out if k in r.variables} for k in names})
    if raise_errors:
        for r in out:
            r.raise_error()
    return res


# ---- metrics ------------------------------------------------------------------------------------
def _metric_rows(store, lay: Layout, run: str, hp: dict) -> list[dict]:
    """metrics.jsonl ``{"kind": "metrics", "step", "ts", "values": {...}}`` -> flat rows."""
    rows = []
    for rec in states.parse_events(store.read_from(lay.run(run, "metrics.jsonl"), 0)):
        if rec.get("kind", "metrics") != "metrics":
            continue
        row = {"run": run, "step": rec.get("step"), "ts": rec.get("ts")}
        row.update({f"hp.{k}": v for k, v in (hp or {}).items()})
        row.update(rec.get("values") or {})
        rows.append(row)
    return rows


def metrics(session, job_id: str):
    """Every logged metric record of a job's runs as a pandas DataFrame (run, hp.*, step, ...)."""
    try:
        import pandas as pd
    except ImportError as err:
        from ..errors import MissingDependencyError
        raise MissingDependencyError("pandas", "analysis", "%xt_metrics") from err
    job = get_job(session, job_id)
    store, lay = job._ctx().store, Layout(job.record.workspace)
    rows = []
    for run, hp in zip(job.record.runs, job.record.hparams or [{}] * len(job.record.runs)):
        rows.extend(_metric_rows(store, lay, run, hp))
    return pd.DataFrame(rows)


def plot(session, job_id: str, metric: str, step: str | None = None):
    """A matplotlib Figure of ``metric`` against the step, one line per run."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        from ..errors import MissingDependencyError
        raise MissingDependencyError("matplotlib", "analysis", "%xt_plot") from err
    df = metrics(session, job_id)
    step = step or str(_Ctx(session).cfg.get("general.step-name") or "step")
    if df.empty or metric not in df.columns:
        known = ", ".join(c for c in df.columns if c not in ("run", "time", "ts") and
                          not c.startswith("hp.")) or "none logged yet"
        raise JobError(f"{_norm_job(job_id)} has no metric {metric!r}", hint=f"metrics: {known}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, part in df[df[metric].notna()].groupby("run", sort=False):
        x = part[step] if step in part.columns and part[step].notna().any() else range(len(part))
        hp = {c[3:]: part[c].iloc[0] for c in part.columns if c.startswith("hp.")}
        label = run + (" " + ", ".join(f"{k}={v}" for k, v in hp.items()) if hp else "")
        ax.plot(list(x), list(part[metric]), marker="." if len(part) < 30 else None, label=label)
    ax.set_xlabel(step)
    ax.set_ylabel(metric)
    ax.set_title(f"{_norm_job(job_id)}: {metric}")
    if df["run"].nunique() <= 12:
        ax.legend(fontsize="small")
    fig.tight_layout()
    plt.close(fig)  # shown once, through the returned Figure, not again as a stray pyplot figure
    return fig
