"""Verbs over the jobs in the store: find, list, status, logs, cancel.

Verbs ask the backend to ``poll`` (reconcile) first, so a dead process shows as failed.
"""
from __future__ import annotations

import sys
import time

from ..errors import JobError, StoreError
from ..naming import param
from ..protocol import events
from ..protocol.layout import Layout
from . import ids, tables
from .context import _Ctx, _split_id
from .job import Job, _summary, live_job
from .records import JobRecord, tags_match


def get_job(session, job_id: str) -> Job:
    """The Job for an id in the configured workspace (re-attach after a kernel restart)."""
    ctx = _Ctx(session)
    job, _ = _split_id(job_id)
    return Job(session, JobRecord.load(ctx.store, ctx.ws, job))


def _all_records(ctx: _Ctx) -> list[JobRecord]:
    """Every readable job record (damaged ones are left to %xt_jobs to show)."""
    return [record for _, record, _ in _all_entries(ctx) if record is not None]


def _all_entries(ctx: _Ctx) -> list[tuple[str, JobRecord | None, str | None]]:
    """(job, record, problem) of every job.json; a damaged one has no record and a problem.
    (job.json is written atomically: a half-written one is damage, not a job being submitted.)"""
    out = []
    for path in ctx.store.list(f"{ctx.ws}/jobs"):
        parts = path.split("/")
        if len(parts) == 4 and parts[3] == "job.json":
            try:
                record = JobRecord.from_json(ctx.store.read_bytes(path), where=path)
            except StoreError as err:
                out.append((parts[2], None, err.message))
            else:
                out.append((parts[2], record, None))
    return sorted(out, key=lambda r: ids.job_number(r[0]) or 0)


def list_jobs(session, status: str | None = None, last: int | None = None,
              experiment: str | None = None, tags: dict | None = None):
    """Jobs in the workspace, oldest first (DataFrame when pandas is installed, else rows);
    ``experiment`` and ``tags`` (K -> V, all must match) filter."""
    if status and status not in events.STATES:
        raise JobError(f"unknown status {status!r}", hint="one of: " + ", ".join(events.STATES))
    if last is not None and last < 1:
        raise JobError(f"{param('last')} must be >= 1 (a number of jobs), got {last}")
    ctx = _Ctx(session)
    records = [(name, r, problem) for name, r, problem in _all_entries(ctx)
               if (r is None and not (experiment or tags)) or r is not None and (
                   (not experiment or (r.experiment or "") == experiment)
                   and tags_match(r.tags, tags))]
    if last:
        records = records[-last:]
    rows = []
    for name, record, problem in records:
        if record is None:
            if not status:
                rows.append({"job": name, "name": None, "target": None, "submitted": None,
                             "runs": None, "status": None, "states": None, "problem": problem})
            continue
        try:
            job = live_job(session, record)
        except StoreError as err:  # this job's objects only: the others still list
            rows.append({"job": name, "name": record.name, "target": record.target,
                         "submitted": record.submitted, "runs": len(record.runs), "status": None,
                         "states": None, "problem": err.message})
            continue
        counts = job.states()
        if status and not counts.get(status):
            continue
        problem = "; ".join(job.problems[r] for r in record.runs if r in job.problems)
        ended = None
        if job.done:  # the job ended with its last run
            ended = max((job.info(r).get("ended") or "" for r in record.runs), default="") or None
        rows.append({"job": record.job, "name": record.name or "", "target": record.target,
                     "submitted": record.submitted, "ended": ended,
                     # a live job: how long so far
                     "duration": tables.duration(record.submitted, ended)
                     if ended or not job.done else None,
                     "runs": len(record.runs), "status": job.status, "states": _summary(counts),
                     "experiment": record.experiment or "", "tags": dict(record.tags),
                     "problem": problem})
    return tables.frame(rows, ["job", "name", "target", "submitted", "ended", "duration", "runs",
                               "status", "states", "experiment", "tags", "problem"])


def _check_run(job, run: str) -> None:
    if run not in job.record.runs:
        raise JobError(f"{job.id} has no run {run}", hint=f"runs: {', '.join(job.runs[:10])}")


def status(session, job_or_run: str):
    """A refreshed Job, or for a run id the run's folded state (dict)."""
    job_id, run = _split_id(job_or_run)
    job = get_job(session, job_id).refresh()
    if run is None:
        return job.check()
    _check_run(job, run)
    job.check(run)
    info = {k: v for k, v in job.info(run).items() if k not in ("events", "final")}
    return {"run": run, **info}


def logs(session, run_id: str, follow: bool = False, out=None, poll_seconds: float = 0.5):
    """Print a run's console (a job id means its first run); ``follow`` until the run ends."""
    out = out or sys.stdout
    job_id, run = _split_id(run_id)
    job = get_job(session, job_id)
    if not run and not job.record.runs:
        raise JobError(f"{job_id} has no runs")
    run = run or job.record.runs[0]
    if run not in job.record.runs:
        raise JobError(f"{job_id} has no run {run}")
    job.check(run)
    store = job._ctx().store
    path = Layout(job.record.workspace).console(run)
    offset = 0
    while True:
        chunk = store.read_from(path, offset)
        if chunk:
            offset += len(chunk)
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        if not follow:
            return None
        if job.refresh().check(run).info(run)["state"] in events.FINAL:
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
        job.check(run)
    elif job.search_open:  # first, so the search's driver starts no run after this
        from . import search
        search.request_stop(job._ctx().store, Layout(job.record.workspace), job_id)
        job._read()
    targets = [run] if run else job.record.runs
    live = [r for r in targets if job.info(r)["state"] not in events.FINAL
            and r not in job.problems]
    # a run no backend ever received (its submit was interrupted) has nothing to stop
    unsent = [r for r in live if not job.info(r).get("backend_id")
              and job.info(r)["state"] == events.CREATED]
    lay = Layout(job.record.workspace)
    for r in unsent:
        events.append(job._ctx().store, lay.events(r), events.CANCELLED,
                      reason="cancelled by user (never reached its target)")
    sent = [r for r in live if r not in unsent]
    if sent:
        job._backend().cancel(job_id, sent)
    return job.refresh().check()

