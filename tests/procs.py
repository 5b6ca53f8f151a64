"""/proc readers for tests that look for leaked processes: zombies, supervisors."""
from __future__ import annotations

import os


def proc_stat(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def _procs():
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(name)
            if fields:
                yield int(name), fields


def zombie_children():
    me = os.getpid()
    return [pid for pid, f in _procs() if int(f[1]) == me and f[0] == b"Z"]


def supervisor_jobdirs(under=None) -> list[str]:
    """The job dir of every live supervisor (one /proc scan; a job dir twice = two supervisors)."""
    return [d for d in map(_jobdir_arg, supervisors(under)) if d]


def _jobdir_arg(pid) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return None  # exited meanwhile
    i = next((i for i, a in enumerate(argv) if a.endswith(b"local_supervisor.py")), None)
    return argv[i + 1].decode() if i is not None and i + 1 < len(argv) else None


def supervisors(under=None):
    """Live (non-zombie) supervisor processes of the job dir ``under`` or of job dirs below it, or
    of all (a forked run has its supervisor's command line: it is told apart by its parent)."""
    out = {}
    for pid, f in _procs():
        if f[0] in (b"Z", b"X"):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        here = under.encode() if under else b""
        if any(a.endswith(b"local_supervisor.py") for a in argv) and (
                under is None or any(a == here or a.startswith(here + b"/") for a in argv)):
            out[pid] = int(f[1])
    return [pid for pid, parent in out.items() if parent not in out]


def rss_kb(pid="self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
