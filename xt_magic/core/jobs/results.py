"""A job's results: output variables and files of its runs, loaded only after they check out."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from ...runner.runner import OUTPUTS_EVENT, RunnerError
from ...runner.runner import safe_extract as _runner_safe_extract
from ...runner.runner import sha256_file
from ..errors import JobError, MissingDependencyError, RunFailed
from ..naming import param
from ..paths import runs_cache_dir
from ..protocol import events, keys, tickets
from ..protocol.layout import Layout
from . import ids
from .context import _split_id
from .control import get_job
from .job import Job, _summary
from .metrics import RunLog


#: output variables up to this size (the runner signs it: ``vars_size``) are read into memory;
#: larger ones are streamed to a file and hashed from it
SMALL_VARS = 1 << 20


class RunResult:
    """One run's outcome: state, hparams, output variables, extracted files dir, error."""

    def __init__(self, run, state, hparams, variables, files_dir, error, reason):
        self.run, self.state, self.hparams, self.variables = run, state, hparams, variables
        self.files_dir, self.error, self.reason = files_dir, error, reason

    def __getitem__(self, name):
        if name not in self.variables:
            self.raise_error()
            if self.state != events.COMPLETED:
                raise JobError(f"run {self.run} is {self.state}: no output variables yet")
            raise JobError(f"run {self.run} has no output variable {name!r}",
                           hint=f"declare it with {param('outputs')}")
        return self.variables[name]

    @property
    def value(self):
        """What the function returned, for a run of ``xt.submit`` (RunFailed if it raised)."""
        from .functions import RESULT
        return self[RESULT]

    def raise_error(self) -> None:
        if self.state == events.FAILED:
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


def _table_html(table) -> str:
    """The run table as HTML, classed as xt's own (not ``dataframe``: a run's DataFrame output
    shown above it is the cell's, this one is the job's summary)."""
    return table.head(200).to_html(index=False).replace('class="dataframe"',
                                                        'class="xt-run-table"', 1)


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

    def table(self):
        """One row per run (a DataFrame): state, times, duration, ``hp.*``, scalar outputs,
        ``last.M``/``best.M`` of each metric (``Job.table()``)."""
        from .tables import run_table
        return run_table(self.job, self.runs_list)

    def __repr__(self) -> str:
        more = len(self.runs_list) - 50
        return "\n".join([f"Results of {self.job.id} ({_summary(self.job.states())})"]
                         + [f"  {r!r}" for r in self.runs_list[:50]]
                         + ([f"  ... {more} more runs"] if more > 0 else []))

    def _repr_html_(self) -> str:
        from html import escape
        try:
            table = self.table()
        except MissingDependencyError:
            table = None  # no pandas: the plain listing below
        if table is not None:
            files = {r.run: r.files_dir for r in self.runs_list if r.files_dir}
            errors = {r.run: f"{r.error.get('type')}: {r.error.get('message')}"
                      for r in self.runs_list if r.error}
            note = "".join(f"<div>{escape(run)} files: <code>{escape(d)}</code></div>"
                           for run, d in list(files.items())[:10])
            note += "".join(f"<div>{escape(run)}: {escape(e)}</div>"
                            for run, e in list(errors.items())[:10])
            return (f"<div><b>Results of {escape(self.job.id)}</b> "
                    f"({escape(_summary(self.job.states()))}){_table_html(table)}"
                    f"{note}</div>")
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


def _verified(store, lay: Layout, job: str, run: str, final: dict, key_of, tmp: str) -> dict:
    """Local copies (under ``tmp``) of a completed run's outputs, only if its final event carries
    a valid signature of this job's key for this job and run, and each output's sha256 is the
    signed one. Outputs are streamed to files and hashed from them: never whole in memory.

    Anyone able to write the store could plant a pickle and an event naming its sha256; only a
    holder of the job key (the runner, through the launch channel) can sign one."""
    paths = lay.run_paths(run)
    present = [name for name in ("vars", "files") if store.exists(paths[name])]
    if not present and not (final.get("vars_sha256") or final.get("files_sha256")):
        return {}  # nothing to load
    if not tickets.verify_event(key_of(), final, job, run):
        raise JobError(f"{run}: result signature does not verify; nothing loaded")
    data = {}
    for name, what in (("vars", "output variables"), ("files", "output files")):
        if name not in present:
            continue
        sha = final.get(f"{name}_sha256")
        size = final.get(f"{name}_size")
        if name == "vars" and isinstance(size, int) and 0 <= size <= SMALL_VARS:
            # a small pickle (a sweep's scalars) is read whole: no temporary file per run
            raw = data["vars_bytes"] = store.read_bytes(paths[name])
            if not sha or hashlib.sha256(raw).hexdigest() != sha:
                raise JobError(f"{run}: {what} at {paths[name]} do not match the checksum its "
                               "run signed; nothing loaded")
            continue
        local = data[name] = os.path.join(tmp, f"{run}.{name}")
        store.download_file(paths[name], local)
        if not sha or sha256_file(local) != sha:
            raise JobError(f"{run}: {what} at {paths[name]} do not match the checksum its run "
                           "signed; nothing loaded")
    return data


def safe_extract(source, dest: str) -> list[str]:
    """The runner's extraction (refuses ``..``, absolute paths, drive letters, links, clashing or
    over-long names) as a JobError. ``source``: zip bytes or a zip file's path."""
    try:
        return _runner_safe_extract(source, dest, what="output files")
    except RunnerError as err:
        raise JobError(str(err)) from None


def _cache_base(ctx) -> str:
    return os.path.expanduser(str(ctx.cfg.get("general.run-cache-dir") or runs_cache_dir()))


def run_cache_dir(ctx, record, run: str) -> str:
    """A run's folder in the runs cache, private to one store and one job submission: another
    store's (or a wiped store's) job with the same id never shows these files."""
    import hashlib
    import re
    store_id = hashlib.sha256(ctx.store.describe().encode()).hexdigest()[:16]
    stamp = re.sub(r"[^0-9]", "", record.submitted or "")[:17] or "unknown"
    return os.path.join(_cache_base(ctx), store_id, record.workspace, f"{record.job}-{stamp}",
                        run)


def results(session, job_id: str, into: dict | None = None, raise_errors: bool = False,
            wait: bool = False, job: Job | None = None) -> Results:
    """Output variables (unpickled after the signature and checksum checks), files (safely extracted under
    ``general.run-cache-dir``), and errors of a job's runs. ``into``: put variables into that
    namespace (one-run job: ``name``; sweeps: ``name`` = {run: value}). ``raise_errors``:
    re-raise the first failed run's exception with its remote traceback."""
    job_id, only = _split_id(job_id)
    # ``job``: the caller's own handle (Job.results), whose final runs are never read again
    job = job if job is not None and job.id == job_id else get_job(session, job_id)
    if wait:
        job.wait()
    else:
        job.refresh()
    job.check(only)
    ctx = job._ctx()
    store, lay = ctx.store, Layout(job.record.workspace)
    keys_cache: list[bytes] = []

    def key_of() -> bytes:  # derived only when some run has outputs to load
        if not keys_cache:
            keys_cache.append(keys.job_key(store, job.record.workspace, job.id))
        return keys_cache[0]

    base = _cache_base(ctx)
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=base, prefix=".fetch-")
    try:
        return _load(job, only, store, lay, key_of, tmp, into, raise_errors,
                     lambda run: run_cache_dir(ctx, job.record, run))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(job, only, store, lay, key_of, tmp, into, raise_errors, folder_of) -> Results:
    hps = job.record.hparams or [{}] * len(job.record.runs)
    picked = []
    for run, hp in zip(job.record.runs, hps):
        if only and run != only:
            continue
        if ids.job_of_run(run) != job.id:  # only this job's own run paths are ever loaded
            raise JobError(f"{job.id}: job.json lists a foreign run {run!r}; not loaded")
        info = job.info(run)
        data = {}
        if info["state"] == events.COMPLETED:
            data = _verified(store, lay, job.id, run, info.get("final") or {}, key_of, tmp)
        elif info["state"] == events.CANCELLED:  # outputs so far (an early-stopped run)
            kept = [e for e in info["events"] if e.get("state") == OUTPUTS_EVENT]
            if kept:
                data = _verified(store, lay, job.id, run, kept[-1], key_of, tmp)
        picked.append((run, hp, info, data))
    # every run checked before anything is unpickled or extracted
    out = []
    for run, hp, info, data in picked:
        variables, files_dir = {}, None
        if data.get("vars_bytes") is not None:
            import cloudpickle
            variables = cloudpickle.loads(data["vars_bytes"])
        elif data.get("vars") is not None:
            import cloudpickle
            with open(data["vars"], "rb") as fh:
                variables = cloudpickle.load(fh)
        if data.get("files") is not None:
            files_dir = folder_of(run)
            shutil.rmtree(files_dir, ignore_errors=True)  # no file of an earlier fetch stays
            os.makedirs(files_dir)
            safe_extract(data["files"], files_dir)
        logged = RunLog(store, lay, run, hp).hparams  # the run's own log_hparams too
        out.append(RunResult(run, info["state"], logged, variables, files_dir, info.get("error"),
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


