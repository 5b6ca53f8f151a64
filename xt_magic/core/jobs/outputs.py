"""A run's cell outputs (nbformat v4 output dicts the runner appends to ``outputs.jsonl``) and its
run notebook (``run.ipynb``): read incrementally while the run goes, checked against the sha256
the run's final event recorded before they are kept, shown as HTML or rendered natively by the
kernel layer (xt_magic/widgets/cell_outputs.py), saved as ``.ipynb`` files.

Never imports IPython: the kernel layer turns these records into displays.
"""
from __future__ import annotations

import hashlib
import html
import json

from ...runner.runner import notebook_outputs as apply_clears  # what the cell shows at the end
from ..errors import JobError
from . import states
from .records import Layout

#: sweeps show this many runs' outputs open; later runs are collapsed
OPEN_RUNS = 3


def final_event(info: dict) -> dict:
    """The event that made the run final (it carries the outputs' checksums), or {}."""
    return next((e for e in reversed(info.get("events") or [])
                 if e.get("state") == info.get("state") and e.get("state") in states.FINAL), {})


class OutputTail:
    """Reads a run's outputs.jsonl as it grows: complete lines only, in order; the sha256 of
    every byte read is compared with the final event's ``outputs_sha256`` by ``check``."""

    def __init__(self, store, path: str):
        self.store, self.path, self.offset = store, path, 0
        self.hash, self.partial, self.checked = hashlib.sha256(), b"", False

    def read(self) -> list[dict]:
        data = self.store.read_from(self.path, self.offset)  # b"" while it does not exist
        if not data:
            return []
        self.offset += len(data)
        self.hash.update(data)
        data, self.partial = self.partial + data, b""
        lines = data.split(b"\n")
        self.partial = lines.pop()  # b"" after a complete last line
        return [json.loads(line) for line in lines if line.strip()]

    def check(self, run: str, final: dict) -> None:
        self.checked = True
        want = final.get("outputs_sha256")
        if want and self.hash.hexdigest() != want:
            raise JobError(f"run {run}: its cell outputs do not match the checksum the run "
                           "recorded; not shown")


def read_outputs(store, workspace: str, run: str, info: dict) -> list[dict]:
    """All of a run's output records; for a final run only if they match its checksum."""
    tail = OutputTail(store, Layout(workspace).run(run, "outputs.jsonl"))
    records = tail.read()
    if info.get("state") in states.FINAL:
        tail.check(run, final_event(info))
    return records


def read_notebook(store, workspace: str, run: str, info: dict):
    """The run's stored notebook as an nbformat NotebookNode (checked, then validated)."""
    import nbformat
    final = final_event(info)
    path = Layout(workspace).run(run, "run.ipynb")
    want = final.get("notebook_sha256")
    if not want or not store.exists(path):
        raise JobError(f"run {run} has no stored notebook (state {info.get('state')})",
                       hint="runs write their notebook when they end")
    data = store.read_bytes(path)
    if hashlib.sha256(data).hexdigest() != want:
        raise JobError(f"run {run}: {path} does not match the checksum its run recorded; "
                       "not loaded")
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    nbformat.validate(nb)
    return nb


# ---------------------------------------------------------------------------------- as HTML
def _b64_img(mime: str, data: str) -> str:
    return f"<img src='data:{mime};base64,{html.escape(data)}'/>"


def record_html(rec: dict) -> str:
    """One output record as an HTML fragment (collapsed sweep runs, viewers without a kernel)."""
    kind = rec.get("output_type")
    if kind == "stream":
        color = "#b00020" if rec.get("name") == "stderr" else "inherit"
        return (f"<pre style='margin:0;color:{color}'>{html.escape(rec.get('text', ''))}</pre>")
    if kind == "error":
        tb = "\n".join(rec.get("traceback") or [f"{rec.get('ename')}: {rec.get('evalue')}"])
        return f"<pre style='margin:0;color:#b00020'>{html.escape(tb)}</pre>"
    data = rec.get("data") or {}
    if "text/html" in data:
        return data["text/html"]
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            return _b64_img(mime, data[mime])
    if "image/svg+xml" in data:
        return data["image/svg+xml"]
    text = data.get("text/markdown") or data.get("text/plain") or ""
    return f"<pre style='margin:0'>{html.escape(text)}</pre>"


def run_header(run: str, hparams: dict | None, state: str | None = None) -> str:
    hp = " ".join(f"{k}={v!r}" for k, v in (hparams or {}).items())
    return f"{run}{' ' + hp if hp else ''}{f' ({state})' if state else ''}"


def group_html(run: str, hparams: dict | None, state: str | None, records: list[dict],
               open_: bool) -> str:
    """A sweep run's outputs under a header naming its hyperparameters (``<details>``)."""
    body = "".join(record_html(r) for r in apply_clears(records)) or \
        "<i style='color:#666'>no outputs</i>"
    return (f"<details{' open' if open_ else ''} class='xt-run-outputs' data-run='"
            f"{html.escape(run)}'><summary><b>{html.escape(run_header(run, hparams, state))}"
            f"</b></summary>{body}</details>")


class RunOutputs:
    """One run's cell outputs. In a kernel with xt_magic loaded they display as the cell's own
    outputs (MIME types kept); elsewhere as HTML or text."""

    def __init__(self, run: str, hparams: dict | None, state: str, records: list[dict]):
        self.run, self.hparams, self.state = run, hparams or {}, state
        self.records = records

    def _repr_html_(self) -> str:
        return group_html(self.run, self.hparams, self.state, self.records, True)

    def __repr__(self) -> str:
        lines = [run_header(self.run, self.hparams, self.state)]
        for rec in apply_clears(self.records):
            kind = rec.get("output_type")
            if kind == "stream":
                lines.append(rec.get("text", "").rstrip("\n"))
            elif kind == "error":
                lines.append(f"{rec.get('ename')}: {rec.get('evalue')}")
            else:
                lines.append((rec.get("data") or {}).get("text/plain", ""))
        return "\n".join(lines)


class JobOutputs:
    """A job's runs' outputs, grouped by run (first ``OPEN_RUNS`` open); ``more`` runs left out."""

    def __init__(self, job_id: str, runs: list[RunOutputs], more: int = 0):
        self.job_id, self.runs, self.more = job_id, runs, more

    def _more(self) -> str:
        return (f"... {self.more} more runs: job.show('RUN') shows one" if self.more else "")

    def _repr_html_(self) -> str:
        return "".join(group_html(r.run, r.hparams, r.state, r.records, i < OPEN_RUNS)
                       for i, r in enumerate(self.runs)) + html.escape(self._more())

    def __repr__(self) -> str:
        return "\n\n".join([repr(r) for r in self.runs] + ([self._more()] if self.more else []))


def show(job, run: str | None = None, limit: int = 20):
    """``job.show(run)``: a RunOutputs; without ``run``: the single run's, or a JobOutputs of
    the first ``limit`` runs (each run is one store read)."""
    job.refresh()
    store = job._ctx().store
    hps = dict(zip(job.record.runs, job.record.hparams or [{}] * len(job.record.runs)))
    runs = [job._run_id(run)] if run else list(job.record.runs)
    got = [RunOutputs(r, hps.get(r), job.state(r),
                      read_outputs(store, job.record.workspace, r, job.info(r)))
           for r in runs[:limit]]
    if len(got) == 1 and (run or len(job.record.runs) == 1):
        return got[0]
    return JobOutputs(job.id, got, more=max(0, len(runs) - limit))


def save_notebooks(job, folder: str) -> list[str]:
    """Write each final run's notebook as ``FOLDER/RUN.ipynb``; returns the paths."""
    import os

    import nbformat
    os.makedirs(folder, exist_ok=True)
    store, paths = job._ctx().store, []
    for run in job.record.runs:
        info = job.info(run)
        if info["state"] not in states.FINAL or not final_event(info).get("notebook_sha256"):
            continue
        path = os.path.join(folder, f"{run}.ipynb")
        nbformat.write(read_notebook(store, job.record.workspace, run, info), path)
        paths.append(path)
    return paths
