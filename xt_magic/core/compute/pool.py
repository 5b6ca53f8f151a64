"""PoolBackend: runs spread over SSH boxes (``service: pool`` with non-localhost boxes).

``submit`` spreads the runs over the reachable boxes and, on each box, hands its share to a box
agent: the local target's supervisor program (``local_supervisor.py``, stdlib only), delivered over
SFTP content addressed (``{work-dir}/bin/{sha}/local_supervisor.py``) and started detached
(``--start``: own session, no terminal), so it outlives the SSH session and the kernel. It starts
the queued runs as the box's slots free (``{work-dir}/slots/slot{i}.lock``, flock-ed by each run:
max-runs holds across jobs and kernels), reports exits, signals and time limits, and honours
cancel markers. Its spec, ``{work-dir}/jobs/{token}/job.json``, holds the runs' launch secrets:
written over SFTP 0600 in a 0700 dir, never on a command line or in the store; each run gets its
secret in its environment (``XT_LAUNCH``). Run dirs are ``{work-dir}/runs/{run}`` (``pid``,
``exit``, ``runner.log``, and the staged ticket when the box reaches a blob store by URL); the
runner is the kernel's own, content addressed in ``{work-dir}/bin/`` like the agent, never the
store's copy.

``queued`` carries ``backend_id: BOX:TOKEN`` (the agent's job dir). ``poll`` reads states from the
store; it only restarts an agent that is gone (``--start`` again, from the spec already on the box:
no key from the kernel), and fails the runs of a box it cannot reach. Store access from the box:
staging.py.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import secrets
import shlex

from ..errors import TargetError, XTError
from ..protocol.events import CANCELLED, FINAL, QUEUED, RUNNING
from . import local_supervisor, ssh
from .base import BOXES_SCHEMA, TEMPLATES, Backend, Launch, agent_idle
from .ssh import box_for
from .staging import Staging, runner_source

q = shlex.quote
CANCEL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def run_dir(box: ssh.Box, run_id: str) -> str:
    return posixpath.join(box.work_dir, "runs", ssh.check_name(run_id, "run id"))


def agent_dir(box: ssh.Box, token: str) -> str:
    return posixpath.join(box.work_dir, "jobs", ssh.check_name(token, "agent token"))


_AGENT: dict = {}


def agent_source() -> tuple[bytes, str]:
    """(bytes, sha256) of the supervisor program the boxes run (read once per process)."""
    if not _AGENT:
        with open(local_supervisor.__file__, "rb") as fh:
            data = fh.read()
        _AGENT.update(data=data, sha=hashlib.sha256(data).hexdigest())
    return _AGENT["data"], _AGENT["sha"]


def agent_path(box: ssh.Box) -> str:
    return posixpath.join(box.work_dir, "bin", agent_source()[1][:32], "local_supervisor.py")


# With /proc: the process $p is still the run's (same start time as its pid file records), not a
# reused PID.
_OURS = ('{ [ ! -d "/proc/$p" ] || { [ -n "$s" ] && '
         '[ "$(sed "s/.*) //" "/proc/$p/stat" | cut -d" " -f20)" = "$s" ]; }; }')
# Run dir $d holds a live run (a zombie counts as gone: PID 1 here reaps orphans late).
_ALIVE = ('[ -f "$d/pid" ] && p=$(cut -d" " -f1 "$d/pid") && s=$(cut -s -d" " -f2 "$d/pid") && '
          'kill -0 "$p" 2>/dev/null && '
          '! grep -qs "^State:[[:space:]]*Z" "/proc/$p/status" && ' + _OURS)


def status_script(work_dir: str, run_ids: list[str]) -> str:
    """sh script printing ``RUN exit N`` / ``RUN alive`` / ``RUN gone -`` per run (plus
    `` timeout`` when the run hit its time limit), then
    ``live N`` (live runs under work_dir, for placement and %xt_boxes) and ``cores N``."""
    runs = " ".join(q(ssh.check_name(r, "run id")) for r in run_ids)
    return (f"w={q(work_dir)}; for r in {runs}; do d=\"$w/runs/$r\"; "
            "t=; [ -f \"$d/timeout\" ] && t=\" timeout\"; "
            f"if [ -f \"$d/exit\" ]; then echo \"$r exit $(cat \"$d/exit\")$t\"; "
            f"elif {_ALIVE}; then echo \"$r alive\"; "
            f"elif [ -f \"$d/exit\" ]; then echo \"$r exit $(cat \"$d/exit\")$t\"; "
            f"else echo \"$r gone - $t\"; fi; done; "
            f"n=0; for d in \"$w\"/runs/*; do if [ ! -f \"$d/exit\" ] && {_ALIVE}; then n=$((n+1)); fi; "
            "done; echo \"live $n\"; echo \"cores $(nproc 2>/dev/null || echo 1)\"")


class PoolBackend(Backend):
    """Runs on a pool of SSH boxes (``compute-targets.X.boxes``)."""

    kind = "pool"
    services = ("pool",)
    target_schema = BOXES_SCHEMA
    template = os.path.join(TEMPLATES, "pool.yaml")

    @classmethod
    def accepts(cls, config, target) -> bool:
        from ..registry import all_localhost
        return not all_localhost(config, target)

    def __init__(self, name, target, *, config, store, session=None):
        super().__init__(name, target, config=config, store=store, session=session)
        names = target.get("boxes") or []
        if not names:
            raise TargetError(f"target {name!r} has no boxes",
                              hint=f"set compute-targets.{name}.boxes")
        self.boxes = {n: box_for(config, n, target) for n in names}
        self._staging = {n: Staging(store, self._sees_fn(b)) for n, b in self.boxes.items()}
        self._cores: dict[str, int] = {}  # default max-runs of a box: its cores
        self._errors: dict[str, Exception] = {}  # why a box had no slots in the last count
        self._delivered: set = set()  # boxes holding this kernel's agent program and runner

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _agent_of(info: dict) -> tuple[str | None, str | None]:
        """(box name, agent token) from ``backend_id`` ("BOX:TOKEN")."""
        box, _, token = str(info.get("backend_id") or "").rpartition(":")
        return (box, token) if box and token else (None, None)

    @classmethod
    def _placement(cls, info: dict) -> tuple[str | None, int | None]:
        """(box name, process group id): the box from ``backend_id``, the group from the runner's
        own ``running`` event (None until it started)."""
        pgid = next((e.get("pgid") for e in reversed(info["events"])
                     if e.get("state") == RUNNING and isinstance(e.get("pgid"), int)), None)
        return cls._agent_of(info)[0], pgid

    @staticmethod
    def _sees_fn(box):
        def sees(path, data):
            try:
                return ssh.get_file(box, path) == data
            except TargetError:
                raise
            except Exception:
                return False
        return sees

    def _live_counts(self, names) -> dict:
        counts, self._errors = {}, {}
        for n in names:
            box = self.boxes[n]
            try:
                out = ssh.run_script(box, status_script(box.work_dir, []), timeout=30).stdout
                facts = dict(line.split(None, 1) for line in out.splitlines() if " " in line)
                counts[n] = int(facts["live"])
                self._cores[n] = int(facts["cores"])
            except (TargetError, ValueError, KeyError) as err:
                counts[n] = None  # unreachable
                self._errors[n] = err
        return counts

    def _capacity(self, n: str) -> int:
        return self.boxes[n].max_runs or self._cores.get(n, 1)

    def _spread(self, launches: list[Launch], counts: dict) -> dict[str, list[Launch]]:
        """Each run to the reachable box least loaded for its capacity (live + given so far)."""
        load = {n: c for n, c in counts.items() if c is not None}
        shares: dict[str, list[Launch]] = {n: [] for n in load}
        for launch in launches:
            n = min(load, key=lambda b: ((load[b] + len(shares[b])) / self._capacity(b),
                                         list(self.boxes).index(b)))
            shares[n].append(launch)
        return {n: s for n, s in shares.items() if s}

    def _deliver_agent(self, box: ssh.Box) -> str:
        path = agent_path(box)
        if box.name not in self._delivered:
            ssh.put_files(box, {path: agent_source()[0]}, once=True)
            self._delivered.add(box.name)
        return path

    def _deliver_runner(self, box: ssh.Box) -> str:
        """The kernel's own runner, content-addressed in the box's ``bin/`` like the agent: a
        runner.py in the store (which others may write) is never what a box runs."""
        data, sha = runner_source()
        path = posixpath.join(box.work_dir, "bin", sha[:32], "runner.py")
        if (box.name, sha) not in self._delivered:
            ssh.put_files(box, {path: data}, once=True)
            self._delivered.add((box.name, sha))
        return path

    def _agent_command(self, box: ssh.Box, *args: str) -> list[str]:
        return box.python_argv() + [self._deliver_agent(box), *args]

    def _start_agents(self, box: ssh.Box, jobdirs: list[str]) -> dict:
        """``--start`` the agents of these job dirs on the box: {jobdir: alive|started|missing}."""
        idle = agent_idle(self.target, self.name)
        shared = ["--agents", posixpath.join(box.work_dir, "agents"), str(idle)] if idle else []
        out = ssh.run(box, self._agent_command(box, "--start", *shared, *jobdirs),
                      timeout=30).stdout
        found = {}
        for line in out.splitlines():
            try:
                rec = json.loads(line)
                found[rec["jobdir"]] = rec["agent"]
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def _hand_over(self, box: ssh.Box, job_id: str, launches: list[Launch]) -> None:
        """Give the box's agent this share: stage the runs, write the spec, start the agent."""
        token = secrets.token_hex(8)
        jobdir = agent_dir(box, token)
        uploads, entries, queued = {}, [], []
        for launch in launches:
            directory = run_dir(box, launch.run_id)
            try:
                staged = self._staging[box.name].stage(launch, directory, f"box {box.name!r}",
                                                       runner=False)
            except TargetError as err:
                if "cannot see the file store" not in err.message:
                    raise
                self._fail_unless_final(launch.run_id, str(err))
                continue
            uploads.update(staged.uploads)
            limit = (launch.max_seconds or launch.ticket.get("max_seconds")
                     or self.target.get("max-seconds"))
            entries.append({"run": launch.run_id, "ticket": launch.ticket,
                            "ticket_file": posixpath.join(directory, staged.ticket),
                            "max_seconds": limit, "launch": launch.launch_secret})
            queued.append((launch.run_id, limit))
        if not entries:
            return
        spec = {"launches": entries, "python": None, "runner": self._deliver_runner(box),
                "token": token,
                "slots": posixpath.join(box.work_dir, "slots"), "max_runs": box.max_runs,
                "grace": self.target.get("kill-grace", CANCEL_GRACE),
                "runs_dir": posixpath.join(box.work_dir, "runs")}
        if uploads:
            ssh.put_files(box, uploads)
        self._deliver_agent(box)
        ssh.put_files(box, {posixpath.join(jobdir, "job.json"): json.dumps(spec).encode()},
                      mode=0o600, dir_mode=0o700)
        for run_id, limit in queued:  # queued before the agent can write running
            self._event(run_id, QUEUED, host=box.name, backend_id=f"{box.name}:{token}",
                        job=job_id, max_seconds=limit)
        try:
            state = self._start_agents(box, [jobdir]).get(jobdir)
        except TargetError as err:  # the spec is on the box: a later poll starts it again
            state = f"not confirmed ({err.message})"
        if state not in ("started", "alive"):
            for run_id, _limit in queued:
                self._event(run_id, QUEUED, reason=f"box {box.name!r}: agent {state}; the next "
                            "poll starts it")

    # -- Backend API --------------------------------------------------------------------------
    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """Spread the runs over the reachable boxes; each box's agent queues its share."""
        ssh.check_name(job_id, "job id")
        for launch in launches:
            ssh.check_name(launch.run_id, "run id")
        counts = self._live_counts(self.boxes)
        if all(c is None for c in counts.values()):
            # nothing started: raise, so %%xt_run shows why (e.g. the trust hint) and the
            # client marks the runs failed with it
            first = next(iter(self._errors.values()))
            others = "; ".join(str(e) for e in list(self._errors.values())[1:])
            raise TargetError(f"no box of target {self.name!r} is reachable: "
                              f"{getattr(first, 'message', first)}"
                              + (f"; {others}" if others else ""),
                              hint=getattr(first, "hint", None))
        left, last = list(launches), ""
        while left:
            if all(c is None for c in counts.values()):
                for launch in left:
                    self._fail_unless_final(launch.run_id, "no box of target "
                                            f"{self.name!r} is reachable: {last}")
                return
            again = []
            for n, share in self._spread(left, counts).items():
                try:
                    self._hand_over(self.boxes[n], job_id, share)
                except TargetError as err:  # box went away before its agent had the runs
                    counts[n], last = None, err.message
                    again += share
            left = again

    def poll(self, job_id: str, run_ids: list[str]) -> list[str]:
        """States come from the store; only an agent that is gone is started again (from the
        spec on its box), and the runs of a box that cannot be reached fail."""
        agents: dict[str, dict[str, list[str]]] = {}
        touched = []  # runs found final or failed here (an agent started reports later)
        for run_id in run_ids:
            info = self._state(run_id)
            if info["state"] in FINAL:
                touched.append(run_id)
                continue
            n, token = self._agent_of(info)
            if n in self.boxes:
                jobdir = agent_dir(self.boxes[n], token)
                agents.setdefault(n, {}).setdefault(jobdir, []).append(run_id)
        for n, jobs in agents.items():
            try:
                found = self._start_agents(self.boxes[n], list(jobs))
            except TargetError as err:
                for run_id in (r for runs in jobs.values() for r in runs):
                    self._fail_unless_final(run_id, f"box {n!r} lost: {err.message}")
                    touched.append(run_id)
                continue
            for jobdir, runs in jobs.items():
                if found.get(jobdir) == "missing":
                    for run_id in runs:
                        self._fail_unless_final(run_id, f"box {n!r} no longer has the job's "
                                                "agent spec (its work dir was cleared)")
                        touched.append(run_id)
        return touched

    def cancel(self, job_id: str, run_ids: list[str], reason: str | None = None) -> None:
        """Cancel markers the agent honours (a queued run never starts), a running run's process
        group killed (TERM, then KILL), and ``cancelled`` recorded."""
        agents: dict[str, dict[str, list[str]]] = {}
        live = []
        for run_id in run_ids:
            info = self._state(run_id)
            if info["state"] in FINAL:
                continue
            live.append(run_id)
            n, token = self._agent_of(info)
            if n in self.boxes:
                agents.setdefault(n, {}).setdefault(agent_dir(self.boxes[n], token),
                                                    []).append(run_id)
        errors = {}
        for n, jobs in agents.items():
            box = self.boxes[n]
            for jobdir, runs in jobs.items():
                try:
                    ssh.run(box, self._agent_command(box, "--cancel", jobdir, *runs), timeout=60)
                except TargetError as err:
                    errors.update({r: err.message for r in runs})
        for run_id in live:
            self._event(run_id, CANCELLED, reason=(reason or "cancelled by user") + (
                f" (box unreachable; the process may still run: {errors[run_id]})"
                if run_id in errors else ""))

    def close(self) -> None:
        for box in self.boxes.values():
            ssh.close(box)


# ---- %xt_boxes ------------------------------------------------------------------------------

_FACTS = ("echo cores $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN); "
          "if command -v nvidia-smi >/dev/null 2>&1; then "
          "echo gpus $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l); "
          "else echo gpus 0; fi")


def list_boxes(session, trust: str | None = None):
    """Rows for ``%xt_boxes``: each box with reachability, cores, GPUs and live runs.

    With ``trust=BOX`` fetch that box's host key, show its fingerprint and record it.
    """
    cfg = session.config()
    boxes = cfg.get("boxes") or {}
    if trust:
        if trust not in boxes:
            raise TargetError(f"no box {trust!r}", hint="known boxes: " + ", ".join(sorted(boxes)))
        info = ssh.trust(ssh.box_from_config(cfg, trust))
        return BoxTable([info], ["box", "address", "key_type", "fingerprint", "recorded"])
    rows = []
    for name, entry in sorted(boxes.items()):
        address = (entry or {}).get("address", "") if isinstance(entry, dict) else ""
        row = {"box": name, "address": address, "reachable": True, "cores": None, "gpus": None,
               "running": None, "max-runs": (entry or {}).get("max-runs"), "error": ""}
        if address in ("", "localhost"):
            import os
            row.update(cores=os.cpu_count(), address="localhost")
            rows.append(row)
            continue
        try:
            box = ssh.box_from_config(cfg, name)
            out = ssh.run_script(box, _FACTS + "; " + status_script(box.work_dir, []),
                                 timeout=box.connect_timeout + 20).stdout
            facts = dict(line.split(None, 1) for line in out.splitlines() if " " in line)
            row.update(cores=_int(facts.get("cores")), gpus=_int(facts.get("gpus")),
                       running=_int(facts.get("live")))
        except XTError as err:
            row.update(reachable=False, error=str(err))
        rows.append(row)
    return BoxTable(rows, ["box", "address", "reachable", "cores", "gpus", "running", "max-runs",
                           "error"])


def _int(text):
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


class BoxTable(list):
    """A list of row dicts that prints as a table (and as HTML in notebooks)."""

    def __init__(self, rows, columns):
        super().__init__(rows)
        self.columns = columns

    def _cells(self):
        return [[("" if r.get(c) is None else str(r.get(c))) for c in self.columns] for r in self]

    def __str__(self):
        cells = self._cells()
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        import html
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self._cells())
        return f"<table><tr>{head}</tr>{body}</table>"
