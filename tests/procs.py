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
    return [os.path.dirname(lock) for _, lock in _supervisors(under)]


def supervisors(under=None):
    """Live (non-zombie) supervisor processes of the job dir ``under`` or of job dirs below it, or
    of all. A supervisor is the process holding its job's ``supervisor.lock`` open (whether it was
    started cold or forked by a box agent, whose command line it then has; its runs close it)."""
    return [pid for pid, _ in _supervisors(under)]


def _supervisors(under):
    here = os.path.abspath(under) if under else None
    out = []
    for pid, f in _procs():
        if f[0] in (b"Z", b"X"):
            continue
        for target in _open_files(pid):
            if os.path.basename(target) == "supervisor.lock" and (
                    here is None or target == os.path.join(here, "supervisor.lock")
                    or target.startswith(here + "/")):
                out.append((pid, target))
                break
    return out


def _open_files(pid):
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    out = []
    for name in names:
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            pass
    return out


def agents(under=None):
    """Live box agents (``local_supervisor.py --agent``) below ``under``, or all: the processes
    holding an agent dir's ``lock`` open (the supervisors they fork close it)."""
    here = os.path.abspath(under) if under else None
    out = []
    for pid, f in _procs():
        if f[0] in (b"Z", b"X"):
            continue
        if any(os.path.basename(t) == "lock" and os.path.basename(os.path.dirname(
                os.path.dirname(t))) == "agents" and (here is None or t.startswith(here + "/"))
               for t in _open_files(pid)):
            out.append(pid)
    return out


def rss_kb(pid="self") -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
