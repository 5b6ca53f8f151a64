"""LocalBackend: the ``local`` target (a pool whose boxes are all localhost).

``submit`` writes the job's launches to ``$XT_HOME/local/jobs/{ws}/{job}/`` and starts ONE detached
supervisor process for the job (``local_supervisor.py``, stdlib only, own session, so it and its
runs survive the kernel exiting). The supervisor starts runs as box slots free up: at most
``max-runs`` at once per box (``boxes.<box>.max-runs``, or the target's ``max-runs``; null = the
number of cores), counted ACROSS jobs and kernels through ``flock``-ed slot files under
``$XT_HOME/local/slots/``. A 1,000-run sweep is one supervisor plus at most max-runs runners.

``poll`` and ``cancel`` work from any process using only the store and that directory: while the
supervisor is alive it reports exits (signal names, exit codes) and time limits itself; when it is
gone, ``poll`` reports runs whose process is gone (a zombie counts as gone: PID 1 may reap late),
and restarts a supervisor for runs that never started.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time

from ...runner import runner as node
from ..errors import TargetError
from ..paths import local_root
from ..protocol import events
from . import local_supervisor as sup
from .base import BOXES_SCHEMA, TEMPLATES, Backend, Launch, agent_idle
from . import staging

CANCEL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


_RUNNER_COPY: dict = {}  # (sha256, local_root) -> path of its verified copy


def runner_copy(timeout: float = 2.0) -> str:
    """A private, immutable copy of the runner for a job's supervisor and runs to load.

    Supervisors and spawned runners must never read ``runner.py`` from the source tree while it
    may be rewritten (``staging.runner_source`` takes it only whole). The copy is content
    addressed (``$XT_HOME/local/runner/<sha256>/runner.py``, written atomically, shared by jobs so
    its bytecode cache stays warm) and made only from a source that compiles.
    """
    deadline = time.monotonic() + timeout
    while True:
        src, sha = staging.runner_source(timeout)
        key = (sha, local_root())
        if key in _RUNNER_COPY and os.path.exists(_RUNNER_COPY[key]):
            return _RUNNER_COPY[key]
        path = os.path.join(local_root(), "runner", sha[:32], "runner.py")
        if not os.path.exists(path):  # a copy that exists was checked when written
            try:
                compile(src, staging.RUNNER, "exec")
            except (SyntaxError, ValueError) as err:  # caught mid-save: read it again
                if time.monotonic() > deadline:
                    raise TargetError(f"cannot read a complete runner from {staging.RUNNER}: "
                                      f"{err}") from err
                time.sleep(0.05)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            node.write_atomic(path, src)
        _write_bytecode(path)
        _RUNNER_COPY[key] = path
        return path


def _write_bytecode(path: str) -> None:
    """The copy's bytecode cache, written even under PYTHONDONTWRITEBYTECODE (which only stops
    writing, not reading): every supervisor start would otherwise compile the runner again."""
    import importlib.util
    import py_compile
    if not os.path.exists(importlib.util.cache_from_source(path)):
        try:
            py_compile.compile(path, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # a cache is only an optimisation


class LocalBackend(Backend):
    """Runs on this machine as detached background processes."""

    kind = "local"
    services = ("pool", "local")
    target_schema = BOXES_SCHEMA
    template = os.path.join(TEMPLATES, "local.yaml")

    @classmethod
    def accepts(cls, config, target) -> bool:
        from ..registry import all_localhost
        return all_localhost(config, target)

    # ------------------------------------------------------------------------------ helpers
    def max_runs(self) -> int:
        """Concurrent runs allowed on the box (null / absent = cores)."""
        value = self.target.get("max-runs")
        if value is None and self.config is not None:
            for box in self.target.get("boxes") or ["localhost"]:
                entry = self.config.get(f"boxes.{box}")
                if isinstance(entry, dict) and entry.get("max-runs") is not None:
                    value = entry["max-runs"]
                    break
        if value is None:
            return os.cpu_count() or 1
        try:
            value = int(value)
            if value < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise TargetError(f"max-runs must be a positive integer, not {value!r}",
                              key=f"compute-targets.{self.name}.max-runs") from None
        return value

    def _jobdir(self, job_id: str, ws: str | None = None) -> str | None:
        base = os.path.join(local_root(), "jobs")
        if ws:
            return os.path.join(base, ws, job_id)
        try:
            hits = [os.path.join(base, w, job_id) for w in os.listdir(base)
                    if os.path.exists(os.path.join(base, w, job_id, "job.json"))]
        except FileNotFoundError:
            return None
        if len(hits) > 1 and self.config is not None:
            want = self.config.get("general.workspace")
            hits = [h for h in hits if os.path.basename(os.path.dirname(h)) == want] or hits
        return hits[0] if hits else None

    def _ticket_state(self, ticket: dict) -> dict:
        return events.state(self.store, ticket["paths"]["events"])

    def _append(self, ticket: dict, state: str, **fields) -> None:
        try:
            events.append(self.store, ticket["paths"]["events"], state, **fields)
        except Exception as err:
            raise TargetError(f"could not record {state!r} for run {ticket.get('run')}: "
                              f"{err}") from err

    def _start_supervisor(self, jobdir: str, lock_fd: int | None = None) -> bool:
        """The job's supervisor, unless one runs (False); race-free and never our child
        (``sup.spawn``)."""
        from ..auth.jobenv import job_environ  # jobs never inherit the kernel's credentials
        try:
            return sup.spawn(jobdir, sys.executable, job_environ(), lock_fd,
                             agents=os.path.join(local_root(), "agents"),
                             idle=agent_idle(self.target, self.name))
        except OSError as err:
            raise TargetError(f"could not start the local job supervisor: {err}") from err

    _load = staticmethod(sup.load_spec)
    _supervisor_alive = staticmethod(sup.alive)

    # ------------------------------------------------------------------------------ Backend API
    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """Queue every launch and start the job's supervisor (returns at once)."""
        if not launches:
            return
        ws = launches[0].workspace
        jobdir = self._jobdir(job_id, ws)
        if os.path.exists(os.path.join(jobdir, "job.json")) and launches[0].open_job \
                and self._adds_to(jobdir):
            return self._add(jobdir, ws, job_id, launches)
        if os.path.exists(os.path.join(jobdir, "job.json")):
            # same ws/job id from an earlier store (ids restart with a new store): stale unless
            # its supervisor still runs
            if self._supervisor_alive(jobdir):
                raise TargetError(f"{ws}/{job_id} is still running locally for another store",
                                  hint="use another workspace, or cancel that job first")
            import shutil
            shutil.rmtree(jobdir, ignore_errors=True)
        # private: job.json holds the runs' launch secrets
        os.makedirs(os.path.join(jobdir, "runs"), mode=0o700, exist_ok=True)
        os.chmod(jobdir, 0o700)
        setup = launches[0].ticket.get("setup") or {}
        python = setup.get("python") or sys.executable
        token = secrets.token_hex(8)
        spec = {"launches": self._entries(launches), "python": python, "runner": runner_copy(),
                "token": token, "slots": os.path.join(local_root(), "slots", "localhost"),
                "max_runs": self.max_runs(), "grace": self.target.get("kill-grace", CANCEL_GRACE),
                "store": self.store.identity()}
        node.write_atomic(os.path.join(jobdir, "job.json"), json.dumps(spec), mode=0o600)
        self._queued(launches, ws, job_id, token)
        self._start_supervisor(jobdir)

    def _entries(self, launches: list[Launch]) -> list[dict]:
        entries = []
        for launch in launches:
            limit = launch.max_seconds or launch.ticket.get("max_seconds") \
                or self.target.get("max-seconds")
            entries.append({"run": launch.run_id, "ticket": launch.ticket,
                            "ticket_file": launch.access.local_path(launch.ticket_path),
                            "max_seconds": limit, "launch": launch.launch_secret})
        return entries

    def _queued(self, launches: list[Launch], ws: str, job_id: str, token: str) -> None:
        host = socket.gethostname()
        for launch in launches:  # queued before the supervisor can write running
            self._append(launch.ticket, events.QUEUED, backend_id=f"local:{host}:{ws}/{job_id}",
                         host=host, token=token)

    def _adds_to(self, jobdir: str) -> bool:
        """Whether ``jobdir`` is this store's submission of the job (runs added later, as a
        search makes them), not a stale one from an earlier store with the same ids."""
        try:
            return self._load(jobdir).get("store") == self.store.identity()
        except (OSError, ValueError):
            return False

    def _add(self, jobdir: str, ws: str, job_id: str, launches: list[Launch]) -> None:
        """Add runs to a submitted job: its live supervisor picks them up (it re-reads job.json
        when it changes, and checks once more under the job lock before it exits); a supervisor
        that is gone is started again."""
        with sup.JobLock(jobdir):
            spec = self._load(jobdir)
            known = {e["run"] for e in spec["launches"]}
            new = [lc for lc in launches if lc.run_id not in known]
            spec["launches"].extend(self._entries(new))
            node.write_atomic(os.path.join(jobdir, "job.json"), json.dumps(spec), mode=0o600)
            self._queued(new, ws, job_id, spec["token"])
        self._start_supervisor(jobdir)  # unless one runs

    def poll(self, job_id: str, run_ids: list[str]) -> list[str] | None:
        """Report runs whose process is gone; restart the supervisor for runs never started (or
        still running: it adopts them and takes their box slots back)."""
        jobdir = self._jobdir(job_id)
        if jobdir is None:
            self._lost(job_id, run_ids)
            return None
        lock = sup.try_lock(os.path.join(jobdir, "supervisor.lock"))
        if lock is None:
            return []  # a live supervisor reaps its runs and reports exits and time limits itself
        try:
            try:
                spec = self._load(jobdir)
            except (OSError, ValueError):
                self._lost(job_id, run_ids)
                return None
            if self._reconcile(jobdir, spec, run_ids):
                self._start_supervisor(jobdir, lock)
        finally:
            os.close(lock)
        return None

    def waiter(self, job_id: str):
        """The job's supervisor wakes us as each run ends (``sup.Waiter``): a wait learns of an
        end within milliseconds and costs nothing in between."""
        jobdir = self._jobdir(job_id)
        if jobdir is None:
            return None
        try:
            return sup.Waiter(jobdir)
        except OSError:
            return None  # e.g. no FIFOs on this filesystem: polling still works

    def _reconcile(self, jobdir: str, spec: dict, run_ids: list[str]) -> bool:
        """With no supervisor (we hold its lock): report what ended; True if a run still needs
        one."""
        wanted = set(run_ids) if run_ids else None
        needed = False
        for launch in spec["launches"]:
            run, ticket = launch["run"], launch["ticket"]
            if wanted is not None and run not in wanted:
                continue
            info = self._ticket_state(ticket)
            if info["state"] in events.FINAL or not _ours(info, spec):
                continue
            rundir = sup.run_dir(jobdir, spec, run)
            if os.path.exists(os.path.join(rundir, "cancel")):
                self._append(ticket, events.CANCELLED, reason="cancelled")
                continue
            pid, pstart = sup.read_pid(rundir)
            exit_code = _read_int(os.path.join(rundir, "exit"))
            if exit_code is not None:  # reaped, but its supervisor died before reporting
                self._append(ticket, events.FAILED, exit_code=exit_code,
                             reason=sup.exit_reason(exit_code))
                node.write_atomic(os.path.join(rundir, "reported"), "")
            elif pid is not None:
                if node.proc_alive(pid, pstart):
                    self._check_time_limit(launch, ticket, info, pid, rundir)
                    needed = True
                else:
                    self._append(ticket, events.FAILED, reason="process gone without a result "
                                 "(exit status unknown: its supervisor was gone too)")
                    node.write_atomic(os.path.join(rundir, "reported"), "")
            else:
                needed = True
        return needed

    def _lost(self, job_id: str, run_ids: list[str]) -> None:
        """The job's local record ($XT_HOME/local/jobs/...) is gone: runs this machine queued whose
        process is not running can never start or be reported; they fail now."""
        host = socket.gethostname()
        for run in run_ids:
            path = self.layout.events(run)
            info = events.state(self.store, path)
            if info["state"] in events.FINAL or not str(info.get("backend_id") or "").startswith(
                    f"local:{host}:"):
                continue  # never queued here (the submit grace covers it) or already final
            if _live_pid(info) is not None:
                continue  # still running: its runner reports the end
            events.append(self.store, path, events.FAILED, reason=f"its local job record is gone "
                          f"({os.path.join(local_root(), 'jobs', self.layout.ws, job_id)})")

    def _check_time_limit(self, launch, ticket, info, pid, rundir) -> None:
        limit = launch.get("max_seconds")
        started = next((e.get("ts") for e in info["events"] if e.get("state") == events.RUNNING),
                       None)
        if limit and started and time.time() - started > float(limit):
            node.write_atomic(os.path.join(rundir, "timeout"), str(limit))
            sup.kill_groups(node, [pid], CANCEL_GRACE)
            self._append(ticket, events.FAILED, reason="time limit", max_seconds=limit)

    def cancel(self, job_id: str, run_ids: list[str], reason: str | None = None) -> None:
        """Stop runs (whole process group: SIGTERM, then SIGKILL) and append ``cancelled``;
        queued runs are cancelled before they start."""
        jobdir = self._jobdir(job_id)
        spec = None
        if jobdir is not None:
            try:
                spec = self._load(jobdir)
            except (OSError, ValueError):
                pass
        if spec is None:  # its local record is gone: stop what still runs, from its events
            pids, paths = [], []
            for run in run_ids:
                path = self.layout.events(run)
                info = events.state(self.store, path)
                if info["state"] not in events.FINAL:
                    pid = _live_pid(info)
                    pids += [pid] if pid is not None else []
                    paths.append(path)
            sup.kill_groups(node, pids, CANCEL_GRACE)
            for path in paths:
                events.append(self.store, path, events.CANCELLED, reason="cancelled by user")
            return
        wanted = set(run_ids) if run_ids else None
        targets, pids = [], []
        for launch in spec["launches"]:
            run, ticket = launch["run"], launch["ticket"]
            if wanted is not None and run not in wanted:
                continue
            if self._ticket_state(ticket)["state"] in events.FINAL:
                continue
            pid = sup.mark_cancelled(node, jobdir, spec, run)
            if pid is not None:
                pids.append(pid)
            targets.append(ticket)
        sup.kill_groups(node, pids, float(spec.get("grace", CANCEL_GRACE)))
        for ticket in targets:
            self._append(ticket, events.CANCELLED, reason=reason or "cancelled by user")


def _ours(info: dict, spec: dict) -> bool:
    """Whether the run's ``queued`` event came from the submission this job dir records."""
    tokens = [e.get("token") for e in info["events"] if e.get("state") == events.QUEUED]
    return not tokens or spec.get("token") in tokens


def _live_pid(info: dict) -> int | None:
    """The run's runner pid if it is running on this machine now (from its ``running`` event)."""
    ev = next((e for e in reversed(info["events"]) if e.get("state") == events.RUNNING), None)
    if not ev or ev.get("host") != os.uname().nodename:
        return None
    try:
        pid = int(ev.get("pid"))
    except (TypeError, ValueError):
        return None
    return pid if node.proc_alive(pid, ev.get("pstart")) else None


def _read_int(path):
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
