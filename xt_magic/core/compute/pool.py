"""PoolBackend: runs spread over SSH boxes (``service: pool`` with non-localhost boxes).

On each box a run gets a directory ``{work-dir}/runs/{run}`` holding ``pid``, ``exit`` and
``runner.log``. The runner is started detached (``setsid nohup sh -c '...; echo $? > exit'``) so
the SSH session can close at once; the process group id is the recorded ``pid``.

Store access from the box: see staging.py (the runner straight from a file store the box sees at
the same path, else runner and ticket uploaded; the launch secret in a 0600 ``launch.json``).

Queue: when every box is at ``max-runs`` a run is recorded ``queued`` without a host, and started
by a later :meth:`poll` when a slot frees. Live slot counts come from the boxes themselves (live
run directories), so several kernels share the boxes correctly.
"""
from __future__ import annotations

import json
import os
import posixpath
import shlex
import time

from ..errors import TargetError, XTError
from ..protocol import tickets
from ..protocol.events import CANCELLED, FINAL, QUEUED
from . import ssh
from .base import TEMPLATES, Backend, Launch
from .ssh import box_for
from .staging import Staging

q = shlex.quote
CLAIM_STALE_SECONDS = 120


def run_dir(box: ssh.Box, run_id: str) -> str:
    return posixpath.join(box.work_dir, "runs", ssh.check_name(run_id, "run id"))


def start_script(directory: str, argv: list[str], max_seconds: int | None = None,
                 max_runs: int | None = None) -> str:
    """sh script: start ``argv`` detached in ``directory`` (own session = own process group) with
    output to runner.log; its exit code lands in ``exit``; prints the pid (= process group id).

    With ``max_seconds`` the session leader watches the clock: past the limit it writes a
    ``timeout`` marker and TERMs its group (it traps TERM itself so it can still write ``exit``),
    then KILLs it 10 s later. With ``max_runs`` it prints ``full`` instead of starting when that
    many runs are live under the work dir (``DIR/../..``). ``cd DIR;`` rather than ``cd DIR && ... &``: the latter keeps the
    channel open until the job ends (local_components.md)."""
    if max_seconds:
        n = int(max_seconds)
        inner = (f"trap true TERM; {ssh.join(argv)} & r=$!; i=0; "
                 "while kill -0 $r 2>/dev/null; do "
                 f"if [ $i -ge {n} ]; then echo {n} > timeout; kill -TERM -$$ 2>/dev/null; fi; "
                 f"if [ $i -ge {n + 10} ]; then kill -KILL -$$; fi; "
                 "sleep 1; i=$((i+1)); done; wait $r; echo $? > exit.tmp; mv exit.tmp exit")
    else:
        inner = f"{ssh.join(argv)}; echo $? > exit.tmp; mv exit.tmp exit"
    start = (f"mkdir -p {q(directory)} && cd {q(directory)} || exit 97; "
             "rm -f exit exit.tmp pid timeout; "
             f"setsid nohup sh -c {q(inner)} > runner.log 2>&1 < /dev/null 9>&- & "
             "echo $! > pid; echo $!")
    if not max_runs:
        return start
    # count and start under one lock on the box, so concurrent submitters/pollers (several
    # kernels) never exceed max-runs; fd 9 is closed for the run so it does not hold the lock
    work = posixpath.dirname(posixpath.dirname(directory))
    return (f"mkdir -p {q(work)} && exec 9>>{q(work + '/.slots.lock')} || exit 97; "
            "command -v flock >/dev/null 2>&1 && flock 9; "
            f"n=0; w={q(work)}; for d in \"$w\"/runs/*; do if [ ! -f \"$d/exit\" ] && "
            f"{_ALIVE}; then n=$((n+1)); fi; done; "
            f"if [ $n -ge {int(max_runs)} ]; then echo full; exit 0; fi; " + start)


# With /proc: the process $p is still ours (its cwd is the run dir $d), not a reused PID.
_OURS = ('{ [ ! -d "/proc/$p" ] || '
         '[ "$(readlink "/proc/$p/cwd")" = "$(cd "$d" 2>/dev/null && pwd -P)" ]; }')
# Run dir $d holds a live run of ours (a zombie counts as gone: PID 1 here reaps orphans late).
_ALIVE = ('[ -f "$d/pid" ] && p=$(cat "$d/pid") && kill -0 "$p" 2>/dev/null && '
          '! grep -qs "^State:[[:space:]]*Z" "/proc/$p/status" && ' + _OURS)


def status_script(work_dir: str, run_ids: list[str]) -> str:
    """sh script printing ``RUN exit N`` / ``RUN alive`` / ``RUN gone -`` per run (plus
    `` timeout`` when the run hit its time limit), then
    ``live N`` (live runs under work_dir, for slot counting) and ``cores N``. A zombie counts as
    gone: PID 1 here reaps orphans late."""
    runs = " ".join(q(ssh.check_name(r, "run id")) for r in run_ids)
    return (f"w={q(work_dir)}; for r in {runs}; do d=\"$w/runs/$r\"; "
            "t=; [ -f \"$d/timeout\" ] && t=\" timeout\"; "
            f"if [ -f \"$d/exit\" ]; then echo \"$r exit $(cat \"$d/exit\")$t\"; "
            f"elif {_ALIVE}; then echo \"$r alive\"; "
            f"elif [ -f \"$d/exit\" ]; then echo \"$r exit $(cat \"$d/exit\")$t\"; "
            f"else echo \"$r gone - $t\"; fi; done; "
            f"n=0; for d in \"$w\"/runs/*; do if [ ! -f \"$d/exit\" ] && {_ALIVE}; then n=$((n+1)); fi; "
            "done; echo \"live $n\"; echo \"cores $(nproc 2>/dev/null || echo 1)\"")


def kill_script(directory: str) -> str:
    """sh script: TERM the run's process group, give it 3 s, then KILL it. A leader PID now used
    by another process is left alone (a PID is never reused while its group still exists).
    (dash's kill takes no ``--``; zombies, which PID 1 reaps late here, do not count as alive.)"""
    return (f"d={q(directory)}; [ -f \"$d/pid\" ] || exit 0; [ -f \"$d/exit\" ] && exit 0; "
            "p=$(cat \"$d/pid\"); " + _OURS + " || exit 0; kill -TERM \"-$p\" 2>/dev/null; i=0; "
            "while ps -o stat= -s \"$p\" 2>/dev/null | grep -q '^[^Z]' && [ $i -lt 30 ]; do "
            "sleep 0.1; i=$((i+1)); done; kill -KILL \"-$p\" 2>/dev/null; exit 0")


class BoxFull(Exception):
    """The box had no free slot when the start script counted under its lock."""


class PoolBackend(Backend):
    """Runs on a pool of SSH boxes (``compute-targets.X.boxes``)."""

    kind = "pool"
    services = ("pool",)
    target_schema = {
        "boxes": {"type": "array", "items": {"type": "string"},
                  "description": "boxes entries (or addresses) runs are spread over"},
    }
    template = os.path.join(TEMPLATES, "pool.yaml")

    @classmethod
    def accepts(cls, config, target) -> bool:
        from . import box_addresses
        return not all(a == "localhost" for a in box_addresses(config, target))

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

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _placement(info: dict) -> tuple[str | None, int | None]:
        """(box name, process group id) from ``backend_id`` ("BOX:PGID"); the runner's own
        ``running`` event overwrites ``host``/``pid`` with the node's hostname and its pid."""
        box, _, pgid = str(info.get("backend_id") or "").rpartition(":")
        return (box, int(pgid)) if box and pgid.isdigit() else (None, None)

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
                counts[n] = None  # unreachable: no slots
                self._errors[n] = err
        return counts

    def _start(self, box: ssh.Box, launch: Launch, job_id: str) -> None:
        directory = run_dir(box, launch.run_id)
        staged = self._staging[box.name].stage(launch, directory, f"box {box.name!r}")
        if staged.uploads:
            ssh.put_files(box, staged.uploads)
        ssh.put_files(box, staged.secret, mode=0o600)
        limit = (launch.max_seconds or launch.ticket.get("max_seconds")
                 or self.target.get("max-seconds"))
        argv = staged.env_argv() + box.python_argv() + [staged.runner, staged.ticket]
        out = ssh.run_script(box, start_script(directory, argv, limit,
                                               box.max_runs or self._cores.get(box.name, 1)),
                             timeout=30).stdout.strip()
        if out == "full":
            raise BoxFull(box.name)
        if not out.isdigit():
            raise TargetError(f"box {box.name!r}: runner did not start (got {out[:200]!r})")
        pid = int(out)
        self._event(launch.run_id, QUEUED, host=box.name, pid=pid,
                    backend_id=f"{box.name}:{pid}", job=job_id, max_seconds=limit)

    def _place(self, job_id: str, launches: list[Launch], counts: dict) -> list[Launch]:
        """Start launches on boxes with free slots; return those still waiting."""
        waiting = []
        for launch in launches:
            started = False
            for n, box in self.boxes.items():
                live = counts.get(n)
                if live is None or live >= (box.max_runs or self._cores.get(n, 1)):
                    continue
                try:
                    self._start(box, launch, job_id)
                except BoxFull:  # another kernel took the last slot meanwhile
                    counts[n] = None
                    continue
                except TargetError as err:
                    if "cannot see the file store" in err.message:
                        self._fail_unless_final(launch.run_id, str(err))
                        started = True
                        break
                    counts[n] = None  # box went away: try the next one
                    continue
                counts[n] = live + 1
                started = True
                break
            if not started:
                waiting.append(launch)
        return waiting

    def _launch_from_store(self, job_id: str, run_id: str) -> Launch:
        """A waiting run's Launch, made again in this kernel: the stored (signed) ticket, and a
        launch secret from the job key derived on this machine (tickets.relaunch)."""
        ticket_path = self.layout.ticket(run_id)
        ticket = json.loads(self.store.read_bytes(ticket_path))
        return Launch(run_id=run_id, job_id=job_id, workspace=self.layout.ws, ticket=ticket,
                      ticket_path=ticket_path, launch_secret=tickets.relaunch(self.store, ticket))

    # -- Backend API --------------------------------------------------------------------------
    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """Start what fits now; the rest is recorded ``queued`` (no host) for :meth:`poll`."""
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
        for launch in self._place(job_id, launches, counts):
            self._event(launch.run_id, QUEUED, reason="waiting for a free box slot", job=job_id)

    def poll(self, job_id: str, run_ids: list[str]) -> None:
        """Reconcile started runs from their boxes; start waiting runs whose turn has come."""
        by_box: dict[str, list[str]] = {}
        waiting = []
        for run_id in run_ids:
            info = self._state(run_id)
            if info["state"] in FINAL:
                continue
            host = self._placement(info)[0]
            if host in self.boxes:
                by_box.setdefault(host, []).append(run_id)
            elif info["state"] == QUEUED:
                waiting.append(run_id)
        counts: dict = {}
        for n, box in self.boxes.items():
            runs = by_box.get(n, [])
            if not runs and not waiting:
                continue
            try:
                out = ssh.run_script(box, status_script(box.work_dir, runs), timeout=30).stdout
            except TargetError as err:
                counts[n] = None
                for run_id in runs:
                    self._fail_unless_final(run_id, f"box {n!r} lost: {err.message}")
                continue
            for line in out.splitlines():
                parts = line.split()
                if parts[:1] == ["live"]:
                    counts[n] = int(parts[1])
                elif parts[:1] == ["cores"]:
                    self._cores[n] = int(parts[1])
                elif len(parts) >= 2 and parts[0] in runs:
                    self._reconcile(n, parts[0], parts[1:])
        if waiting:
            if all(counts.get(n) is None for n in self.boxes):
                for run_id in waiting:
                    self._fail_unless_final(run_id, "no box of target "
                                            f"{self.name!r} is reachable")
                return
            # several kernels may poll the same job: only the one holding the claim starts it
            launches = []
            for run_id in (r for r in waiting if self._claim(r)):
                try:
                    launches.append(self._launch_from_store(job_id, run_id))
                except XTError as err:  # no job key here, or a ticket that does not verify
                    self._fail_unless_final(run_id, err.message)
                    self.store.delete(self._claim_path(run_id))
            for launch in self._place(job_id, launches, counts):
                self.store.delete(self._claim_path(launch.run_id))

    def _claim_path(self, run_id: str) -> str:
        return self.layout.claim(run_id, "pool-start")

    def _claim(self, run_id: str) -> bool:
        path = self._claim_path(run_id)
        stamp = str(time.time()).encode()
        if self.store.create_exclusive(path, stamp):
            return True
        try:
            age = time.time() - float(self.store.read_bytes(path))
        except (XTError, ValueError):
            age = 0.0
        if age > CLAIM_STALE_SECONDS:  # its holder died between claiming and starting
            self.store.delete(path)
            return self.store.create_exclusive(path, stamp)
        return False

    def _reconcile(self, box_name: str, run_id: str, status: list[str]) -> None:
        code = int(status[1]) if len(status) > 1 and status[1].lstrip("-").isdigit() else None
        if "timeout" in status:
            self._fail_unless_final(run_id, f"time limit reached on box {box_name!r}",
                                    exit_code=code)
        elif status[0] == "exit":
            self._fail_unless_final(
                run_id, f"runner exited with code {code} on box {box_name!r} without reporting "
                        "a result", exit_code=code)
        elif status[0] == "gone":
            self._fail_unless_final(
                run_id, f"runner process on box {box_name!r} is gone without an exit code "
                        "(killed, or the box restarted)")

    def cancel(self, job_id: str, run_ids: list[str]) -> None:
        """Kill each run's remote process group (TERM, then KILL) and record ``cancelled``."""
        errors = []
        for run_id in run_ids:
            info = self._state(run_id)
            if info["state"] in FINAL:
                continue
            box = self.boxes.get(self._placement(info)[0] or "")
            if box is not None:
                try:
                    ssh.run_script(box, kill_script(run_dir(box, run_id)), timeout=30)
                except TargetError as err:
                    errors.append(err.message)
            self._event(run_id, CANCELLED, reason="cancelled by user" + (
                f" (box unreachable; the process may still run: {errors[-1]})"
                if box is not None and errors else ""))

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
