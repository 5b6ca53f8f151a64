"""A run's cell outputs (nbformat v4 output dicts the runner appends to ``outputs.jsonl``) and its
run notebook (``run.ipynb``): read incrementally while the run goes, shown as HTML or rendered
natively by the kernel layer (xt_magic/widgets/cell_outputs.py), saved as ``.ipynb`` files.

Trust: the runner signs each output line with the job key (``sig`` over the record, its
``xt_seq`` and the run id), so a line is checked before it is shown, live; the run's signed final
event carries ``outputs_sha256`` (all lines: none dropped or added) and, for a cell run, what its
notebook is built from (``notebook``: input names, python version), for a notebook run the stored
notebook's ``notebook_sha256``.
Nothing here shows an output or a notebook that does not verify.

Never imports IPython: the kernel layer turns these records into displays.
"""
from __future__ import annotations

import hashlib
import html
import json

from ...runner.runner import notebook_outputs as apply_clears  # what the cell shows at the end
from ...runner.runner import run_notebook, verify_fields
from ..errors import JobError
from ..protocol import events, keys, tickets
from ..protocol.layout import Layout

#: sweeps show this many runs' outputs open; later runs are collapsed
OPEN_RUNS = 3
#: Job.wait follows the outputs of this many runs of a sweep (each is a store read per poll)
LIVE_RUNS = 50


class OutputTail:
    """Reads a run's outputs.jsonl as it grows: complete lines only, each checked (signature,
    sequence number) before it is returned; ``check`` compares the sha256 of every line read with
    the signed final event's ``outputs_sha256``."""

    def __init__(self, store, workspace: str, job: str, run: str, key: bytes):
        self.tail = events.Tail(store, Layout(workspace).outputs(run))
        self.job, self.run, self.key = job, run, key
        self.hash, self.count, self.checked = hashlib.sha256(), 0, False

    def read(self) -> list[dict]:
        data = self.tail.read_bytes()  # b"" while the object does not exist
        self.hash.update(data)
        out = []
        for line in data.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if not (isinstance(rec, dict) and rec.get("xt_seq") == self.count
                    and verify_fields(self.key, dict(rec, xt_run=self.run))):
                raise JobError(f"run {self.run}: cell output {self.count} does not verify "
                               "(not written by this run); it and later ones are not shown")
            self.count += 1
            out.append({k: v for k, v in rec.items() if k not in ("sig", "xt_seq")})
        return out

    def check(self, final: dict | None) -> None:
        """The run ended. Under its runner's signed final event: every line it wrote was read,
        no more, no less. A run that ended otherwise (killed, cancelled) has only its lines'
        own signatures, already checked."""
        self.checked = True
        if not tickets.verify_event(self.key, final, self.job, self.run):
            return
        if (final.get("outputs_sha256") or hashlib.sha256().hexdigest()) != \
                self.hash.hexdigest():
            raise JobError(f"run {self.run}: its cell outputs do not match the checksum the run "
                           "signed; not shown")


def signed_final(key: bytes, job: str, run: str, final: dict | None) -> dict:
    """The run's final event, if the runner signed it (else a one-line JobError)."""
    if not tickets.verify_event(key, final, job, run):
        why = (final or {}).get("reason") or "no final event from its runner"
        raise JobError(f"run {run} ended without a signed record of its cell outputs ({why}); "
                       "they are not shown")
    return final


def job_key(job) -> bytes:
    return keys.job_key(job._ctx().store, job.record.workspace, job.id)


def read_outputs(job, run: str, key: bytes | None = None) -> list[dict]:
    """All of a run's checked output records (a final run's checked against its final event)."""
    tail = OutputTail(job._ctx().store, job.record.workspace, job.id, run, key or job_key(job))
    records = tail.read()
    info = job.info(run)
    if info["state"] in events.FINAL:
        tail.check(info.get("final"))
    return records


def read_notebook(job, run: str):
    """The run's notebook as an nbformat NotebookNode (validated). A cell run's is built here
    from what verifies: its signed ticket, the cell checked against the ticket's sha256, its
    checked outputs and its runner's signed final event; a notebook run's stored notebook is
    checked against the sha256 in that event."""
    import nbformat
    info = job.info(run)
    if info["state"] not in events.FINAL:
        raise JobError(f"run {run} is {info['state']}: its notebook is written when it ends")
    key = job_key(job)
    final = signed_final(key, job.id, run, info.get("final"))
    if isinstance(final.get("notebook"), dict):
        nb = nbformat.from_dict(json.loads(json.dumps(cell_notebook(job, run, key, final))))
        nbformat.validate(nb)
        return nb
    store, path = job._ctx().store, Layout(job.record.workspace).notebook(run)
    want = final.get("notebook_sha256")
    if not want or not store.exists(path):
        raise JobError(f"run {run} has no stored notebook", hint="runs with general.max-output-mb"
                       " 0 (or ended before their cell ran) have none")
    data = store.read_bytes(path)
    if hashlib.sha256(data).hexdigest() != want:
        raise JobError(f"run {run}: {path} does not match the checksum its run signed; "
                       "not loaded")
    nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    nbformat.validate(nb)
    return nb


def has_notebook(final: dict | None) -> bool:
    """Whether a run's final event says it has a notebook (a cell run's built, a notebook
    run's stored)."""
    return bool(final and (isinstance(final.get("notebook"), dict)
                           or final.get("notebook_sha256")))


def cell_notebook(job, run: str, key: bytes, final: dict) -> dict:
    """A cell run's notebook (nbformat v4 dict) from what verifies; ``final``: its signed final
    event (``signed_final``)."""
    store, lay = job._ctx().store, Layout(job.record.workspace)
    try:
        ticket = json.loads(store.read_bytes(lay.ticket(run)))
    except ValueError:
        ticket = None
    if not (isinstance(ticket, dict) and ticket.get("job") == job.id and ticket.get("run") == run
            and tickets.verify(ticket, key)):
        raise JobError(f"run {run}: its ticket does not verify; no notebook")
    bundle = ticket.get("bundle") or {}
    cell = store.read_bytes(bundle["cell"])
    if hashlib.sha256(cell).hexdigest() != bundle.get("cell_sha256"):
        raise JobError(f"run {run}: {bundle['cell']} does not match the checksum its ticket "
                       "signed; no notebook")
    made = final["notebook"]
    return run_notebook(ticket, cell.decode("utf-8"), list(made.get("inputs") or []),
                        read_outputs(job, run, key), final.get("state"), made.get("python"))


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
    key = job_key(job)
    hps = dict(zip(job.record.runs, job.record.hparams or [{}] * len(job.record.runs)))
    runs = [job._run_id(run)] if run else list(job.record.runs)
    got = [RunOutputs(r, hps.get(r), job.state(r), read_outputs(job, r, key))
           for r in runs[:limit]]
    if len(got) == 1 and (run or len(job.record.runs) == 1):
        return got[0]
    return JobOutputs(job.id, got, more=max(0, len(runs) - limit))


def save_notebooks(job, folder: str) -> list[str]:
    """Write each ended run's notebook as ``FOLDER/RUN.ipynb``; returns the paths."""
    import os

    import nbformat
    os.makedirs(folder, exist_ok=True)
    paths = []
    for run in job.record.runs:
        final = job.info(run).get("final") or {}
        if not has_notebook(final):
            continue  # not ended, or no notebook (capture off / failed before the cell ran)
        path = os.path.join(folder, f"{run}.ipynb")
        nbformat.write(read_notebook(job, run), path)
        paths.append(path)
    return paths
