"""A job's results: output variables and files of its runs, loaded only after they check out."""
from __future__ import annotations

import json
import os

from ...runner.runner import RunnerError
from ...runner.runner import safe_extract as _runner_safe_extract
from ..errors import JobError, RunFailed
from . import ids, packaging, states
from .context import _split_id
from .control import get_job
from .job import Job, _summary
from .records import Layout


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
    """The runner's extraction (refuses ``..``, absolute paths, drive letters, links) as a JobError."""
    try:
        return _runner_safe_extract(data, dest, what="output files")
    except RunnerError as err:
        raise JobError(str(err)) from None


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


