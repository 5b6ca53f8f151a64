"""Test helpers for the jobs tests: a synchronous in-process backend (runs runner.py to completion
inside ``submit``), so the client side is tested without the LocalBackend's scheduling."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from xt_magic.core.compute.base import Backend
from xt_magic.core.compute.local import LocalBackend
from xt_magic.core.protocol import events as states


class SyncBackend(Backend):
    # stands in for the local backend (registered under its name): serves what it serves
    kind = "local"
    services, target_schema = LocalBackend.services, LocalBackend.target_schema
    accepts = LocalBackend.__dict__["accepts"]
    submitted: list = []

    def submit(self, job_id, launches):
        for launch in launches:
            SyncBackend.submitted.append(launch)
            self.store.append(launch.ticket["paths"]["events"],
                              states.make_event(states.QUEUED, backend_id=f"sync:{launch.run_id}"))
            runner = self.store.local_path(launch.runner_path)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
                json.dump(launch.ticket, fh)
            try:
                subprocess.run([launch.ticket.get("python") or sys.executable, runner, fh.name],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                               env=dict(os.environ, XT_LAUNCH=json.dumps(launch.launch_secret)))
            finally:
                os.unlink(fh.name)

    def poll(self, job_id, run_ids):
        pass

    def cancel(self, job_id, run_ids):
        for run in run_ids:
            self.store.append(f"ws1/runs/{run}/events.jsonl", states.make_event(states.CANCELLED))


class NullBackend(SyncBackend):
    """Records launches, starts nothing (runs stay queued)."""

    def submit(self, job_id, launches):
        for launch in launches:
            SyncBackend.submitted.append(launch)
            self.store.append(launch.ticket["paths"]["events"],
                              states.make_event(states.QUEUED, backend_id="null"))
