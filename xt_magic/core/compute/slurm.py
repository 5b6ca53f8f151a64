"""SlurmBackend (``service: slurm``): runs as Slurm batch jobs; a sweep is one job array.

sbatch runs here when the kernel is on a login node (``login`` unset), or on a login node over the
SSH layer (``login: BOX`` naming a ``boxes:`` entry, or ``user@host[:port]``). Resource options
(partition, nodes, cpus-per-task, gpus, mem, time, account, qos, sbatch-directives) are passed as
sbatch *arguments* (an argv list, shell-quoted when it goes over SSH) rather than ``#SBATCH`` lines,
so no value can smuggle in a directive; the script body only holds shell-quoted paths.

The job's environment is limited to ``--export=PATH,HOME,USER,LANG,XT_HOME`` so nothing from the
kernel's environment (credentials included) leaks into jobs; the runner sets the job's own env vars
from its ticket. Store access works as on the pool (staging.py): a file store must be visible at
the same path on the cluster (checked on the login node), else use a blob store; the launch secret
is a 0600 ``launch.json`` in the run directory; each start of the task hands the runner a
private copy through ``XT_LAUNCH_FILE`` (see ``batch_script``).

Status comes from ``scontrol show job`` (``sacct`` needs slurmdbd, absent on many small clusters);
finished jobs stay visible for slurm.conf's MinJobAge (default 300 s). Time limit, failure exit
codes, node failures and cancellations seen by Slurm become ``failed``/``cancelled`` events with
the reason when the runner could not report them itself.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess

from ...runner.runner import NODE_BOOTSTRAP
from ..errors import ConfigError, TargetError
from ..paths import xt_home
from ..protocol.events import CANCELLED, FAILED, FINAL, QUEUED
from . import ssh
from .base import TEMPLATES, Backend, Launch
from .ssh import box_for
from .staging import LAUNCH_FILE, Staging, runner_sha

q = shlex.quote
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
          "RESV_DEL_HOLD", "SPECIAL_EXIT"}
EXPORT = "--export=PATH,HOME,USER,LANG,XT_HOME"
_FIELDS = re.compile(r"(?:^|\s)(JobId|ArrayJobId|ArrayTaskId|JobState|ExitCode|Reason|TimeLimit)"
                     r"=(\S*)")
_OPTIONS = ("partition", "nodes", "cpus-per-task", "gpus", "mem", "time", "account", "qos")


class LocalExec:
    """Runs Slurm commands on this machine (the kernel is on a login node)."""

    label = "localhost"

    def run(self, argv: list[str], check: bool = True, timeout: float = 60) -> ssh.Result:
        from ..auth.jobenv import job_environ
        try:  # belt and braces with --export: sbatch itself never sees credentials either
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                 env=job_environ())
        except FileNotFoundError as err:
            raise TargetError(f"{argv[0]} not found: is this a Slurm login node?",
                              hint="set the target's login: to a boxes entry of a login node") from err
        except subprocess.TimeoutExpired as err:
            raise TargetError(f"{argv[0]} gave no answer within {timeout:g}s") from err
        result = ssh.Result(res.returncode, res.stdout, res.stderr)
        if check and res.returncode:
            tail = (res.stderr.strip().splitlines() or [""])[-1]
            raise TargetError(f"{argv[0]} exited with {res.returncode}: {tail}")
        return result

    def put_files(self, files: dict[str, bytes], mode: int = 0o644) -> None:
        from ...runner.runner import write_atomic
        for path, data in files.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomic(path, data, mode=mode)

    def read(self, path: str) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError:
            return None


class SSHExec:
    """Runs Slurm commands on a login node over the SSH layer."""

    def __init__(self, box: ssh.Box):
        self.box, self.label = box, box.name

    def run(self, argv, check=True, timeout=60):
        return ssh.run(self.box, argv, check=check, timeout=timeout)

    def put_files(self, files, mode=None):
        ssh.put_files(self.box, files, mode=mode)

    def read(self, path):
        return ssh.get_file(self.box, path)


def _value(name: str, value) -> str:
    text = str(value)
    if not text or "\n" in text or "\r" in text or "\0" in text:
        raise ConfigError(f"bad value {text!r}", key=f"compute-targets.*.{name}")
    return text


def sbatch_args(target: dict, job_id: str, count: int, out_dir: str,
                max_seconds: int | None = None) -> list[str]:
    """sbatch's arguments (without the script) for a job of ``count`` runs (>1: a job array)."""
    args = ["--parsable", f"--job-name=xt-{job_id}", EXPORT]
    array = count > 1
    args.append(f"--output={out_dir}/slurm-{'%A_%a' if array else '%j'}.out")
    if array:
        args.append(f"--array=0-{count - 1}")
    for name in _OPTIONS:
        value = target.get(name)
        if value is None and name == "time" and max_seconds:
            value = max(1, -(-int(max_seconds) // 60))  # whole minutes, rounded up
        if value not in (None, ""):
            args.append(f"--{name}={_value(name, value)}")
    for directive in target.get("sbatch-directives") or []:
        text = _value("sbatch-directives", directive).strip()
        if text.startswith("#SBATCH"):
            text = text[len("#SBATCH"):].strip()
        try:
            words = shlex.split(text)
        except ValueError:
            words = []
        # one option, with at most one value: anything else would reach sbatch as the script
        if not words or not words[0].startswith("-") or len(words) > 2:
            raise ConfigError(f"sbatch directive {directive!r} is not one option",
                              key="sbatch-directives",
                              hint="e.g. --exclusive, --constraint=a100 or --comment 'two words'")
        args += words
    return args


def batch_script(job_id: str, python: list[str], run_dirs: list[str], runners: list[str],
                 tickets: list[str], sha: str) -> str:
    """The bash script sbatch runs: task i (``SLURM_ARRAY_TASK_ID``, 0 for a single job) runs
    ``python -c NODE_BOOTSTRAP SHA runner.py ticket`` in its run directory: the runner (on the
    shared filesystem, or uploaded) runs only if its sha256 is ``sha``, from a copy compiled once
    per ``$XT_HOME``. Every value is shell-quoted.

    The runner deletes the launch file it is given, so each start gets a private copy of the
    run's ``launch.json``: a requeued task (preemption, ``scontrol requeue``) starts again with
    its secret and resumes. Once the runner has reported the run final (exit 0 or 1) the
    original is deleted; a killed start keeps it for the next one."""
    def arr(values):
        return "(" + " ".join(q(v) for v in values) + ")"
    return "\n".join([
        "#!/bin/bash",
        f"# xt_magic job {ssh.check_name(job_id, 'job id')} (generated)",
        f"DIRS={arr(run_dirs)}",
        f"RUNNERS={arr(runners)}",
        f"TICKETS={arr(tickets)}",
        'i="${SLURM_ARRAY_TASK_ID:-0}"',
        'mkdir -p "${DIRS[$i]}" && cd "${DIRS[$i]}" || exit 97',
        "umask 077",
        f'L=".launch.$$"; cp {q(LAUNCH_FILE)} "$L" 2>/dev/null && export XT_LAUNCH_FILE="$L"',
        f'{ssh.join(python)} -c {q(NODE_BOOTSTRAP)} {q(sha)} "${{RUNNERS[$i]}}" '
        f'"${{TICKETS[$i]}}"; rc=$?',
        f'rm -f "$L"; case $rc in 0|1) rm -f {q(LAUNCH_FILE)};; esac',
        "exit $rc",
        "",
    ])


def parse_scontrol(text: str) -> list[dict]:
    """Records of ``scontrol -o show job`` (one line each) with the fields we use."""
    return [dict(_FIELDS.findall(line)) for line in text.splitlines() if "JobId=" in line]


def _task_state(records: list[dict], slurm_id: str) -> dict | None:
    job, _, task = slurm_id.partition("_")
    for rec in records:
        if task and rec.get("ArrayJobId") == job and rec.get("ArrayTaskId") == task:
            return rec
        if not task and rec.get("JobId") == job:
            return rec
    if task:  # not started yet: folded into one pending record "ArrayTaskId=3-7%2"
        for rec in records:
            if rec.get("ArrayJobId") == job and not rec.get("ArrayTaskId", "").isdigit():
                return rec
    return None


def outcome(rec: dict | None, slurm_id: str) -> tuple[str, str, int | None] | None:
    """(state, reason, exit code) for a run Slurm sees as finished; None while it is active."""
    if rec is None:
        return (FAILED, f"slurm job {slurm_id} is no longer known to Slurm (it ended without "
                        "the runner reporting, or MinJobAge passed)", None)
    state = (rec.get("JobState") or "").split("+")[0]
    if state in ACTIVE or not state:
        return None
    code_text, _, signal_text = (rec.get("ExitCode") or "").partition(":")
    code = int(code_text) if code_text.isdigit() else None
    reason = rec.get("Reason") or ""
    if state == "TIMEOUT":
        return FAILED, f"time limit {rec.get('TimeLimit', '')} reached (slurm job {slurm_id})", code
    if state == "CANCELLED":
        return CANCELLED, f"cancelled in Slurm (slurm job {slurm_id})", code
    if state == "FAILED":
        return FAILED, f"slurm job {slurm_id} failed with exit code {code} ({reason})", code
    if state == "COMPLETED":
        return FAILED, f"slurm job {slurm_id} ended without the runner reporting a result", code
    return FAILED, f"slurm job {slurm_id} ended {state} ({reason})", code


class SlurmBackend(Backend):
    """Runs on a Slurm cluster (``compute-targets.X.service: slurm``)."""

    kind = "slurm"
    services = ("slurm",)
    target_schema = {
        "nodes": {"type": "integer", "minimum": 1, "description": "nodes per job"},
        "partition": {"type": "string", "description": "partition"},
        "cpus-per-task": {"type": "integer", "minimum": 1, "description": "--cpus-per-task"},
        "gpus": {"type": ["integer", "string"], "description": "--gpus (count or type:count)"},
        "mem": {"type": ["string", "integer"], "description": "--mem (e.g. 8G; an integer is MB)"},
        "time": {"type": ["string", "integer"], "description": "--time (D-HH:MM:SS; an integer is minutes)"},
        "account": {"type": "string", "description": "--account"},
        "qos": {"type": "string", "description": "--qos"},
        "sbatch-directives": {"type": "array", "items": {"type": "string"},
                              "description": "extra #SBATCH lines, e.g. --exclusive"},
        "login": {"type": "string", "description": "boxes entry (or user@host[:port]) of the login node "
                  "reached over SSH (empty: sbatch runs here)"},
        "work-dir": {"type": "string", "description": "directory for job scripts and run dirs, visible to "
                     "the nodes (default $XT_HOME/slurm, or the login box's work-dir)"},
        "python": {"type": "string", "description": "python on the nodes that starts runner.py (default "
                   "python3; with login: the box's python)"},
    }
    template = os.path.join(TEMPLATES, "slurm.yaml")

    def __init__(self, name, target, *, config, store, session=None):
        super().__init__(name, target, config=config, store=store, session=session)
        login = target.get("login")
        if login:
            box = box_for(config, login, target)
            self.exec = SSHExec(box)
            self.work_dir, self.python = box.work_dir, box.python_argv()
        else:
            self.exec = LocalExec()
            self.work_dir = os.path.join(xt_home(), "slurm")
            self.python = ["python3"]
        if target.get("python"):
            self.python = shlex.split(str(target["python"]))
        self.work_dir = str(target.get("work-dir") or self.work_dir)
        self._staging = Staging(store, lambda path, data: self.exec.read(path) == data)

    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """One sbatch per call: a single job, or a job array with one task per launch."""
        ssh.check_name(job_id, "job id")
        job_dir = f"{self.work_dir}/jobs/{job_id}"
        uploads, secrets, dirs, runners, tickets = {}, {}, [], [], []
        for launch in launches:
            directory = f"{self.work_dir}/runs/{ssh.check_name(launch.run_id, 'run id')}"
            staged = self._staging.stage(launch, directory, f"slurm login {self.exec.label!r}")
            uploads.update(staged.uploads)
            secrets.update(staged.secret)
            dirs.append(directory)
            runners.append(staged.runner)
            tickets.append(staged.ticket)
        script_path = f"{job_dir}/job.sh"
        uploads[script_path] = batch_script(job_id, self.python, dirs, runners, tickets,
                                            runner_sha()).encode()
        self.exec.put_files(uploads)
        self.exec.put_files(secrets, mode=0o600)
        self.exec.run(["mkdir", "-p", job_dir])
        max_seconds = (max((la.max_seconds or 0 for la in launches), default=0)
                       or self.target.get("max-seconds"))
        argv = ["sbatch"] + sbatch_args(self.target, job_id, len(launches), job_dir,
                                        max_seconds) + [script_path]
        out = self.exec.run(argv).stdout.strip()
        slurm_job = out.split(";")[0]
        if not slurm_job.isdigit():
            raise TargetError(f"sbatch gave no job id (got {out[:200]!r})")
        for i, launch in enumerate(launches):
            slurm_id = f"{slurm_job}_{i}" if len(launches) > 1 else slurm_job
            self._event(launch.run_id, QUEUED, host=self.exec.label, backend_id=slurm_id,
                        job=job_id)

    def poll(self, job_id: str, run_ids: list[str]) -> list[str]:
        """Ask ``scontrol show job`` about each non-final run; record what Slurm saw end."""
        pending: dict[str, list[tuple[str, str]]] = {}
        touched = []  # runs found final, or that Slurm saw end
        for run_id in run_ids:
            info = self._state(run_id)
            slurm_id = str(info.get("backend_id") or "")
            if info["state"] in FINAL:
                touched.append(run_id)
                continue
            if not re.fullmatch(r"\d+(_\d+)?", slurm_id):
                continue
            pending.setdefault(slurm_id.partition("_")[0], []).append((run_id, slurm_id))
        for slurm_job, runs in pending.items():
            res = self.exec.run(["scontrol", "-o", "show", "job", slurm_job], check=False)
            if res.exit_status and "Invalid job id" not in res.stderr:
                raise TargetError(f"scontrol show job {slurm_job} exited with "
                                  f"{res.exit_status}: {res.stderr.strip()[:300]}")
            records = parse_scontrol(res.stdout) if res.exit_status == 0 else []
            for run_id, slurm_id in runs:
                result = outcome(_task_state(records, slurm_id), slurm_id)
                if result is None:
                    continue
                touched.append(run_id)
                if self._state(run_id)["state"] not in FINAL:
                    state, reason, code = result
                    self._event(run_id, state, reason=reason, exit_code=code)
        return touched

    def cancel(self, job_id: str, run_ids: list[str], reason: str | None = None) -> None:
        """scancel each run's Slurm job (array task) and record ``cancelled``."""
        for run_id in run_ids:
            info = self._state(run_id)
            if info["state"] in FINAL:
                continue
            slurm_id = str(info.get("backend_id") or "")
            if re.fullmatch(r"\d+(_\d+)?", slurm_id):
                self.exec.run(["scancel", slurm_id])
            self._event(run_id, CANCELLED, reason=reason or "cancelled by user")

    def close(self) -> None:
        if isinstance(self.exec, SSHExec):
            ssh.close(self.exec.box)
