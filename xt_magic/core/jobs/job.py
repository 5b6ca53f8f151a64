"""The Job handle: a submitted job's runs and their states, read from the store in any kernel."""
from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime

from ..errors import DamagedObject, JobError, RunFailed
from ..protocol import events
from ..protocol.layout import Layout
from .context import _Ctx
from .fanout import _each_run, _RunError, _store_workers
from .records import JobRecord


#: seconds after a job's submit time after which a run no target received is failed
#: (``internal.submit-grace-seconds``)
SUBMIT_GRACE = 120.0

#: after a wake-up, Job.wait lets ends pile up this long per other live run (at most the max)
#: before it looks, and at least WAKE_DUTY times what its last look cost: a 1-run job is seen at
#: once, a 1,000-run sweep a few times a second, and waiting never takes much of a core
WAKE_GAP_PER_RUN, WAKE_GAP_MAX, WAKE_DUTY = 0.0002, 0.25, 9

#: with no wake-up, Job.wait looks again after this share of the time it has waited, between
#: the min and the max: a job is seen to end within about a tenth of its run time (a second at
#: most), however cheap or costly each look is
POLL_SHARE, POLL_MIN, POLL_MAX = 0.1, 0.05, 1.0


class Job:
    """A submitted job: id, target, runs and their states (from the store). Works in any kernel."""

    def __init__(self, session, record: JobRecord):
        self.session, self.record = session, record
        self.id = record.job
        self._info: dict[str, dict] = {}
        self._watches: dict[str, events.Watch] = {}  # live runs' events, read as they change
        self.problems: dict[str, str] = {}  # run -> what is wrong with its store objects
        self._search = record.search_spec()
        # a bayesian job's runs are made as the search goes: record.runs grows on every read
        self._search_open = bool(self._search and self._search.get("type") == "bayesian")
        self._read()

    def twin(self) -> "Job":
        """Another handle on this job holding what this one has read (no store read): for a
        thread that refreshes on its own, so it never races this one's reads."""
        import copy
        other = copy.copy(self)
        other.record = copy.copy(self.record)
        other._info, other.problems = dict(self._info), dict(self.problems)
        other._watches = {run: w.copy() for run, w in self._watches.items()}
        return other

    # internals
    def _ctx(self) -> _Ctx:
        return _Ctx(self.session)

    def _read(self, only: list[str] | None = None) -> None:
        store, lay = self._ctx().store, Layout(self.record.workspace)
        if self._search_open and only is None:
            from . import search
            runs, points, over = search.runs_and_points(store, lay, self.record)
            self.record.runs, self.record.hparams = runs, points
            self._search_open = not over
        live = [run for run in (self.record.runs if only is None else only)
                if not (run in self._info and self._info[run]["state"] in events.FINAL)]
        for run in live:
            if run not in self._watches:
                self._watches[run] = events.Watch(store, lay.events(run))
        # every live run's change token at once (one listing on a blob store); only the runs
        # whose events moved are read. Runs never read are read whatever a token says.
        paths = [self._watches[run].path for run in live]
        tokens = store.change_tokens(paths) if any(run in self._info for run in live) \
            else dict.fromkeys(paths)
        live = [run for run in live if not (
            run in self._info and self._watches[run].unchanged(tokens[self._watches[run].path]))]

        def read(run: str) -> dict:
            watch = self._watches[run]
            try:
                changed = watch.refresh(tokens[watch.path])
            except DamagedObject as err:
                self.problems[run] = err.message
                return events.fold([])
            self.problems.pop(run, None)
            if not changed and run in self._info:
                return self._info[run]
            return watch.info()
        try:  # one read per run: concurrent on a remote store
            infos = _each_run(read, [(run,) for run in live], _store_workers(store, len(live)))
        except _RunError as err:
            cause = err.cause
        else:
            self._info.update(zip(live, infos))
            for run in live:  # a final run is never read again
                if self._info[run]["state"] in events.FINAL:
                    self._watches.pop(run, None)
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

    def check(self, run: str | None = None) -> "Job":
        """JobError naming the damaged store object of ``run`` (or of any run)."""
        bad = [r for r in ([run] if run else self.record.runs) if r in self.problems]
        if bad:
            more = f" (and {len(bad) - 1} more run(s))" if len(bad) > 1 else ""
            raise JobError(f"{self.problems[bad[0]]}{more}")
        return self

    def refresh(self) -> "Job":
        """Reconcile with the backend (dead processes become failed) and re-read the states."""
        self._read()
        if self._fail_unsent():
            self._read()
        live = [r for r in self.record.runs
                if self._info[r]["state"] not in events.FINAL and r not in self.problems]
        if live:
            touched = self._backend().poll(self.id, live)
            if touched is None or touched:  # what the backend recorded; the runs' own news
                self._read(touched)          # since the read above comes with the next look
        if self._search and (live or self._search_open):
            from . import search  # a driver killed with its machine or kernel starts again
            search.ensure_driver(self.session, self._ctx().store, self.record)
        return self

    def _fail_unsent(self) -> bool:
        """Runs still ``created`` a grace period after the submit never reached a backend (the
        submitting kernel died mid-submit): nothing would ever move them, so they fail."""
        unsent = [r for r in self.record.runs if self._info[r]["state"] == events.CREATED
                  and r not in self.problems]
        if not unsent:
            return False
        ctx = self._ctx()
        grace = ctx.cfg.get("internal.submit-grace-seconds")
        grace = SUBMIT_GRACE if grace is None else float(grace)
        try:
            submitted = datetime.fromisoformat(self.record.submitted).timestamp()
        except (TypeError, ValueError):
            submitted = None  # no usable submit time: the grace runs from the first event
        if submitted is None:
            submitted = min((e.get("ts") for r in unsent for e in self._info[r]["events"]
                             if isinstance(e.get("ts"), (int, float))), default=None)
        if submitted is None or time.time() - submitted < grace:
            return False
        lay = Layout(self.record.workspace)
        for run in unsent:
            events.append(ctx.store, lay.events(run), events.FAILED,
                          reason="submit interrupted: the target never received this run")
        return True

    def state(self, run: str) -> str:
        return self._info[run]["state"]

    def info(self, run: str) -> dict:
        return self._info[run]

    def states(self) -> Counter:
        return Counter(self._info[r]["state"] for r in self.record.runs)

    @property
    def done(self) -> bool:
        return not self._search_open and all(
            self._info[r]["state"] in events.FINAL for r in self.record.runs)

    @property
    def search(self) -> dict | None:
        """The job's search (type, metric, maximize, objective, early stopping...), or None."""
        return self._search

    @property
    def search_open(self) -> bool:
        """A bayesian search still making runs."""
        return self._search_open

    @property
    def expected_runs(self) -> int:
        """Runs the job will have (a bayesian search makes its runs as it goes)."""
        if self._search and self._search.get("type") == "bayesian":
            return max(len(self.record.runs), int(self._search.get("runs") or 0))
        return len(self.record.runs)

    @property
    def status(self) -> str:
        """One word for the job: running while any run is live, else failed/cancelled/completed."""
        counts = self.states()
        if self._search_open:
            return events.RUNNING
        for s in (events.RUNNING, events.QUEUED, events.CREATED, events.FAILED, events.CANCELLED):
            if counts.get(s):
                return s
        return events.COMPLETED

    def wait(self, timeout: float | None = None, progress: bool = True, out=None,
             on_output=None) -> "Job":
        """Block until every run is final, showing progress (tqdm.auto; plain lines to a file ``out``).

        ``on_output(job, run, records)`` receives each run's new cell output records (nbformat
        output dicts) in order as they arrive, and ``on_output(job, run, None)`` once the run is
        final and its outputs checked against the checksum its final event recorded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        total = self.expected_runs
        bar = _Progress(total, f"{self.id}", enabled=progress, out=out)
        feed = _OutputFeed(self, on_output) if on_output else None
        started = time.monotonic()
        delay = POLL_MIN
        waiter = None if self.done else self._backend().waiter(self.id)
        try:
            while True:
                looked = time.monotonic()
                self.refresh().check()  # a damaged run can never be seen to end
                looked = time.monotonic() - looked
                counts = self.states()
                bar.update(sum(counts[s] for s in events.FINAL), _summary(counts))
                if feed:
                    feed.poll()
                if self.done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise JobError(f"{self.id}: not finished after {timeout}s ({_summary(counts)})")
                if waiter is None:
                    time.sleep(delay)
                else:  # woken as a run ends; the timeout still reconciles and shows progress
                    left = None if deadline is None else deadline - time.monotonic()
                    if waiter.wait(delay if left is None else min(delay, max(left, 0.0))):
                        # a sweep's ends come in bursts: one look per gap, not one per end,
                        # so the kernel leaves the cores to the runs
                        live = total - sum(counts[s] for s in events.FINAL)
                        if live > 1:
                            time.sleep(min(WAKE_GAP_MAX, max(WAKE_GAP_PER_RUN * (live - 1),
                                                             WAKE_DUTY * looked)))
                delay = min(POLL_MAX, max(POLL_MIN, POLL_SHARE * (time.monotonic() - started)))
        finally:
            if waiter is not None:
                waiter.close()
            bar.close()
        return self

    def raise_failed(self) -> None:
        """RunFailed for the first failed run (its remote error), naming how many failed."""
        failed = [r for r in self.record.runs if self.state(r) == events.FAILED]
        if failed:
            info = self.info(failed[0])
            raise RunFailed(failed[0], info.get("error"), info.get("reason"),
                            failed=len(failed), total=len(self.record.runs))

    def show(self, run: str | None = None):
        """A run's cell outputs (all runs' for a sweep without ``run``), checked; they display
        as the cell's outputs in a kernel with xt_magic loaded, as HTML elsewhere."""
        from .outputs import show
        return show(self, run)

    def notebook(self, run: str | None = None):
        """The run's executed cell as an nbformat NotebookNode (parameters cell + the cell with
        its outputs), checked against its final event and validated."""
        from .outputs import read_notebook
        run = self._run_id(run)
        self.refresh()
        return read_notebook(self, run)

    def _run_id(self, run) -> str:
        """A run of this job from ``run3.2``, ``2`` (its index) or None (a one-run job's)."""
        if run is None:
            if len(self.record.runs) != 1:
                raise JobError(f"{self.id} has {len(self.record.runs)} runs: name one",
                               hint=f"runs: {', '.join(self.record.runs[:10])}")
            return self.record.runs[0]
        run = str(run)
        if run.isdigit():
            run = f"run{self.id[3:]}.{run}"
        if run not in self.record.runs:
            raise JobError(f"{self.id} has no run {run}",
                           hint=f"runs: {', '.join(self.record.runs[:10])}")
        return run

    def results(self, into: dict | None = None, raise_errors: bool = False) -> "Results":
        """Each run's outcome (variables, files, error; ``.value`` for an ``xt.submit`` run)."""
        from .results import results
        return results(self.session, self.id, into=into, raise_errors=raise_errors, job=self)

    def result(self, timeout: float | None = None):
        """The return value of a one-run ``xt.submit`` job, once it is done; a run that raised
        raises RunFailed with its remote traceback."""
        from .functions import RESULT
        if RESULT not in self.record.outputs:
            raise JobError(f"{self.id} runs a cell, not a function: job.results() gives its "
                           "output variables")
        if len(self.record.runs) != 1:
            raise JobError(f"{self.id} has {len(self.record.runs)} runs: "
                           "job.results() gives each run's value")
        self.wait(timeout=timeout, progress=False)
        return self.results().runs_list[0].value

    def cancel(self) -> "Job":
        from .control import cancel
        return cancel(self.session, self.id)

    def logs(self, run: str | None = None, follow: bool = False, out=None):
        from .control import logs
        return logs(self.session, run or self.record.runs[0], follow=follow, out=out)

    def metrics(self):
        from .metrics import metrics
        return metrics(self.session, self.id)

    def search_history(self):
        """The search so far, one row per run in run order: value of the metric, best so far,
        state, stopped early (and why), hyperparameters (a DataFrame when pandas is installed)."""
        from . import search
        from .tables import frame
        rows = search.history(self._ctx().store, Layout(self.record.workspace), self.record,
                              self._info)
        columns = ["order", "run", "state", "value", "best", "stopped", "reason"]
        return frame(rows, columns + [c for c in (rows[0] if rows else {}) if c not in columns])

    def search_summary(self) -> str | None:
        """One line: search type, metric, runs so far, best value and run (None: no search)."""
        if not self._search:
            return None
        from . import search
        rows = search.history(self._ctx().store, Layout(self.record.workspace), self.record,
                              self._info)
        best = rows[-1]["best"] if rows else None
        at = next((r["run"] for r in rows if r["value"] == best and not r["stopped"]), None)
        stopped = sum(1 for r in rows if r["stopped"])
        kind = self._search.get("type") or "sweep"
        return (f"{kind} search on {'max' if self._search['maximize'] else 'min'} "
                f"{self._search['metric']}: {len(rows)}/{self.expected_runs} runs"
                + (f", best {best:.6g} ({at})" if best is not None else "")
                + (f", {stopped} stopped early" if stopped else ""))

    def table(self):
        """One row per run (a DataFrame): state, started, ended, duration, ``hp.*``, scalar
        output variables, ``last.M`` and ``best.M`` of each logged metric, reason."""
        return self.results().table()

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
        summary = self.search_summary()
        if summary:
            lines.append("  " + summary)
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


def live_job(session, record: JobRecord) -> Job:
    """A Job reconciled with its target for a listing; an unreachable target shows what the
    store says."""
    from ..errors import XTError
    job = Job(session, record)
    if not job.done:
        try:
            job.refresh()
        except XTError:
            pass
    return job


class _OutputFeed:
    """Hands each run's new, checked output records to a callback while ``Job.wait`` polls
    (the first ``LIVE_RUNS`` runs of a sweep). Runs not started are not read; a final run is read
    once more, checked, then left alone."""

    def __init__(self, job: Job, callback):
        from .outputs import LIVE_RUNS, OutputTail, job_key
        store, key = job._ctx().store, job_key(job)
        self.job, self.callback = job, callback
        self.tails = {run: OutputTail(store, job.record.workspace, job.id, run, key)
                      for run in job.record.runs[:LIVE_RUNS]}
        self.finished: set[str] = set()

    def poll(self) -> None:
        for run in self.tails:
            state = self.job.state(run)
            if run in self.finished or state in (events.CREATED, events.QUEUED):
                continue
            records = self.tails[run].read()
            if records:
                self.callback(self.job, run, records)
            if state in events.FINAL:
                self.finished.add(run)
                self.tails[run].check(self.job.info(run).get("final"))
                self.callback(self.job, run, None)


def _summary(counts: Counter) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in events.STATES if counts.get(s)) or "no runs"


class _Progress:
    """A job's progress (tqdm is a dependency). ``out`` None: tqdm.auto (a widget bar in a notebook
    with ipywidgets, else one line redrawn and padded by tqdm, so a shorter text leaves nothing
    behind); ``out`` a terminal: tqdm there; ``out`` anything else (a log, a StringIO): one plain
    line per change, never a ``\\r`` redraw in a file."""

    def __init__(self, total: int, desc: str, enabled: bool = True, out=None):
        self.total, self.desc, self.enabled, self.out = total, desc, enabled, out
        self.bar, self.last = None, None
        if not enabled:
            return
        if out is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="run", leave=True)
        elif _isatty(out):
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="run", leave=True, file=out)

    def update(self, done: int, text: str) -> None:
        if not self.enabled or (done, text) == self.last:
            return
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
        else:
            print(f"{self.desc}: {done}/{self.total} done ({text})", file=self.out, flush=True)
        self.last = (done, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False

