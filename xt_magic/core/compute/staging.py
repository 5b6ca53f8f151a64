"""Getting a run onto a node the kernel reaches over SSH or a shared directory (pool, Slurm).

A node that sees the store's filesystem at the same path (checked once per root by reading the
run's ticket back) reads its ticket and writes its results there; its runner (the store's copy)
is started only through ``runner.NODE_BOOTSTRAP``, which checks it against ``runner_sha()``, or
not at all (the pool runs its own from ``bin/``). Otherwise the node gets the kernel's
``runner.py`` (never the store's copy) and the ticket uploaded next to the run and reaches the
store through the URLs of its node access. A file store the node cannot see is a TargetError
telling to use a blob store: outputs are never copied back by hand, so every target writes
events/console/outputs the same way.

``secret`` is the launch secret as ``launch.json`` in the run directory (Slurm: created 0600,
deleted by the runner once read, found through ``XT_LAUNCH_FILE``: a path, never the secret on a
command line); the pool instead puts every launch secret of a box in its agent's 0600 spec.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time

from ...runner.runner import LAUNCH_FILE_ENV
from ..errors import TargetError
from .base import Launch

LAUNCH_FILE = "launch.json"
RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "runner", "runner.py")
_RUNNER: dict = {}  # (RUNNER, mtime_ns, size) -> (bytes, sha256)


def runner_source(timeout: float = 2.0) -> tuple[bytes, str]:
    """(bytes, sha256) of the runner.py this kernel ships: the one read of it, for every bundle,
    the local target's private copy, the pool's ``bin/`` and Slurm's uploads. Nodes get these
    bytes from the kernel, never the store's copy; the sha256 is the one a node's
    ``runner.NODE_BOOTSTRAP`` accepts (Batch, Slurm), so a runner changed in the store or on a
    shared filesystem never runs. Taken only whole: an editor save or a checkout truncates the
    file first, and a run of an empty runner.py exits 0 reporting nothing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            st = os.stat(RUNNER)
            key = (RUNNER, st.st_mtime_ns, st.st_size)
            if key in _RUNNER:
                return _RUNNER[key]
            with open(RUNNER, "rb") as fh:
                src = fh.read()
            if b"\ndef main(" not in src or len(src) != os.stat(RUNNER).st_size:
                raise ValueError("incomplete runner source")
        except (OSError, ValueError) as err:
            if time.monotonic() > deadline:
                raise TargetError(f"cannot read a complete runner from {RUNNER}: {err}",
                                  hint="reinstall xt-magic") from err
            time.sleep(0.05)
            continue
        _RUNNER.clear()
        _RUNNER[key] = (src, hashlib.sha256(src).hexdigest())
        return _RUNNER[key]


def runner_sha() -> str:
    return runner_source()[1]


class Staged:
    """What to put on the node for one run, and the names to start it with."""

    def __init__(self, uploads: dict, secret: dict, runner: str, ticket: str):
        self.uploads, self.secret, self.runner, self.ticket = uploads, secret, runner, ticket

    def env_argv(self) -> list[str]:
        """``env XT_LAUNCH_FILE=launch.json``: prefix for the runner's argv (run in its dir)."""
        return ["env", f"{LAUNCH_FILE_ENV}={LAUNCH_FILE}"]


class Staging:
    """Decides how a node reaches the store and what must be uploaded (module docstring)."""

    def __init__(self, store, sees):
        self.store, self.sees, self._seen = store, sees, {}

    def stage(self, launch: Launch, remote_dir: str, where: str, runner: bool = True) -> Staged:
        """Uploads for one run (``secret``: {path: bytes} to create 0600) and the runner and ticket
        paths: absolute, or relative to ``remote_dir`` (where the runner is started). ``runner``
        False: the node gets its runner another way (the pool's ``bin/``); ``Staged.runner`` is
        then None."""
        secret = {posixpath.join(remote_dir, LAUNCH_FILE):
                  json.dumps(launch.launch_secret).encode()}
        access = launch.access
        ticket = access.local_path(launch.ticket_path)
        if ticket is not None:
            root = access.local_path("")
            if root not in self._seen:
                self._seen[root] = self.sees(ticket, self.store.read_bytes(launch.ticket_path))
            if not self._seen[root]:
                raise TargetError(f"{where} cannot see the file store at {root.rstrip('/')}",
                                  hint="use a blob store (xt-services.storage naming an "
                                       "azure-blob service) or mount the store at the same path")
            return Staged({}, secret, access.local_path(launch.runner_path) if runner else None,
                          ticket)
        # uploaded next to the run; the start command runs in remote_dir, so plain names do
        uploads = {posixpath.join(remote_dir, "ticket.json"): json.dumps(launch.ticket).encode()}
        if runner:
            uploads[posixpath.join(remote_dir, "runner.py")] = runner_source()[0]
        return Staged(uploads, secret, "runner.py" if runner else None, "ticket.json")
