"""Verbs over runs across jobs (XT's `list runs`, `rerun`, `cancel all`, tags after submit)."""
from __future__ import annotations

from ..errors import JobError
from ..protocol import events
from ..protocol.layout import Layout
from .context import _Ctx, _split_id
from . import tables
from .control import _all_records, cancel, get_job
from .job import Job, live_job
from .metrics import RunLog
from .records import JobRecord, tags_match
from .snapshot import Snapshot

BASE_COLUMNS = ["job", "run", "experiment", "target", "status", "started", "ended", "exit_code",
                "tags"]


def list_runs(session, job: str | None = None, status: str | None = None,
              experiment: str | None = None, tags: dict | None = None, sort: str | None = None,
              top: int | None = None, reverse: bool = False):
    """Runs across jobs: hyperparameters (given and logged), last metric values and the best
    ``general.primary-metric`` (``best.NAME``). ``sort``: best first by ``general.maximize-metric``
    (``reverse`` flips); ``top``: the first N after sorting."""
    if status and status not in events.STATES:
        raise JobError(f"unknown status {status!r}", hint="one of: " + ", ".join(events.STATES))
    if top is not None and top < 1:
        raise JobError(f"--top {top}: expected a positive number of runs")
    ctx = _Ctx(session)
    primary = str(ctx.cfg.get("general.primary-metric") or "")
    maximize = ctx.cfg.get("general.maximize-metric") is not False
    only_job, only_run = _split_id(job) if job else (None, None)
    rows, hp_cols, metric_cols = [], [], []
    for record in _all_records(ctx):
        if only_job and record.job != only_job:
            continue
        if experiment and (record.experiment or "") != experiment:
            continue
        live = live_job(session, record)
        lay = Layout(record.workspace)
        hps = record.hparams or [{}] * len(record.runs)
        for run, hp in zip(record.runs, hps):
            if only_run and run != only_run:
                continue
            info = live.info(run)
            if status and info["state"] != status:
                continue
            log = RunLog(ctx.store, lay, run, hp)
            run_tags = {**record.tags, **log.tags, **(record.run_tags or {}).get(run, {})}
            if not tags_match(run_tags, tags):
                continue
            row = {"job": record.job, "run": run, "experiment": record.experiment,
                   "target": record.target, "status": info["state"], "started": info.get("started"),
                   "ended": info.get("ended"), "exit_code": info.get("exit_code"),
                   "tags": run_tags}
            for k, v in log.hparams.items():
                row[f"hp.{k}"] = v
                if f"hp.{k}" not in hp_cols:
                    hp_cols.append(f"hp.{k}")
            for k, v in log.last().items():
                row[k] = v
                if k not in metric_cols:
                    metric_cols.append(k)
            if primary:
                row[f"best.{primary}"] = log.best(primary, maximize)
            rows.append(row)
    best_cols = [f"best.{primary}"] if primary and any(
        r.get(f"best.{primary}") is not None for r in rows) else []
    columns = BASE_COLUMNS + hp_cols + [c for c in metric_cols if c not in BASE_COLUMNS] + best_cols
    if sort:
        if not any(r.get(sort) is not None for r in rows) and rows:
            raise JobError(f"--sort {sort}: no run has that column",
                           hint="columns: " + ", ".join(columns))
        present = [r for r in rows if r.get(sort) is not None]
        missing = [r for r in rows if r.get(sort) is None]
        try:
            present.sort(key=lambda r: r[sort], reverse=maximize != reverse)
        except TypeError:
            present.sort(key=lambda r: str(r[sort]), reverse=maximize != reverse)
        rows = present + missing
    if top:
        rows = rows[:top]
    return tables.frame(rows, columns)


def tag(session, job_or_run: str, tags: dict) -> dict:
    """Add tags to a job or one run (in job.json); returns the tags it now has."""
    if not tags:
        raise JobError("%xt_tag needs at least one K=V")
    ctx = _Ctx(session)
    job_id, run = _split_id(job_or_run)
    record = JobRecord.load(ctx.store, ctx.ws, job_id)
    if run:
        if run not in record.runs:
            raise JobError(f"{job_id} has no run {run}")
        record.run_tags = dict(record.run_tags or {})
        record.run_tags[run] = {**record.run_tags.get(run, {}), **tags}
        out = record.run_tags[run]
    else:
        record.tags = {**record.tags, **tags}
        out = record.tags
    record.save(ctx.store)
    return dict(out)


def cancel_all(session, target: str | None = None) -> list[str]:
    """Cancel every live run of every job (on ``target`` only, when given); returns the jobs."""
    ctx = _Ctx(session)
    done = []
    for record in _all_records(ctx):
        if target and record.target != target:
            continue
        job = Job(session, record)
        if job.done:
            continue
        cancel(session, record.job)
        done.append(record.job)
    return done


def rerun(session, job_or_run: str, hp: dict | None = None, target: str | None = None,
          resume: bool = False, wait: bool = False, out=None):
    """A new job running the same cell, script or command with the same inputs, code snapshot
    and setup: the same hyperparameters unless ``hp`` is given; ``resume``: the new run starts
    from RUN's last checkpoint (``is_resuming()`` true)."""
    from . import submit
    ctx = _Ctx(session)
    job_id, run = _split_id(job_or_run)
    old = get_job(session, job_id).record
    if resume and not run:
        if len(old.runs) != 1:
            raise JobError("--resume needs a run id (a job with one run will do)",
                           hint=f"runs: {', '.join(old.runs[:10])}")
        run = old.runs[0]
    source, inputs_pkl, snap, commands = _signed_bundle(ctx, old, run or old.runs[0])
    hps = old.hparams or [{}] * len(old.runs)
    points = [hps[old.runs.index(run)]] if run else list(hps)
    reuse = {"job": old.job, "snapshot": snap, "inputs_pkl": inputs_pkl, "inputs": old.inputs,
             "points": points, "search": old.search}
    return submit.run_cell(
        session, source, {}, target=target or old.target, setup=old.setup, name=old.name,
        outputs=old.outputs, hp=hp, tags=dict(old.tags), experiment=old.experiment,
        max_seconds=old.extra.get("max_seconds"), wait=wait, out=out, reuse=reuse,
        commands=commands, resume=run if resume else None)


def _signed_bundle(ctx, old: JobRecord, run: str):
    """(cell source, inputs pickle, snapshot, base commands) of a job, each checked against the
    run's signed ticket: whoever can write the store cannot slip other code into a rerun."""
    import json
    from ..protocol import keys, tickets
    from .packaging import sha256
    lay = Layout(old.workspace)
    key = keys.job_key(ctx.store, old.workspace, old.job)
    try:
        ticket = json.loads(ctx.store.read_bytes(lay.ticket(run)))
    except ValueError:
        ticket = None
    if not isinstance(ticket, dict) or not tickets.verify(ticket, key):
        raise JobError(f"{run}: its ticket's signature does not verify; not run again")
    bundle = ticket.get("bundle") or {}

    def checked(path, sha, what):
        data = ctx.store.read_bytes(path) if path else None
        if data is not None and sha256(data) != sha:
            raise JobError(f"{old.job}: {what} at {path} is not what its run signed; not run again")
        return data
    source = checked(bundle.get("cell"), bundle.get("cell_sha256"), "the cell").decode("utf-8")
    inputs_pkl = checked(bundle.get("inputs"), bundle.get("inputs_sha256"), "the inputs")
    snap = Snapshot(sha256=bundle["snapshot_sha256"], path=bundle["snapshot"]) \
        if bundle.get("snapshot") else None
    commands = old.extra.get("commands")
    signed = ticket.get("commands")
    if commands is not None or signed is not None:
        base = [{"argv": list(c["argv"]), "python": bool(c.get("python"))}
                for c in commands or []]
        if signed is None or len(signed) != len(base) or any(
                s.get("argv", [])[:len(b["argv"])] != b["argv"]
                or bool(s.get("python")) != b["python"] for s, b in zip(signed, base)):
            raise JobError(f"{old.job}: job.json's commands are not what its run signed; "
                           "not run again")
        commands = base
    return source, inputs_pkl, snap, commands
