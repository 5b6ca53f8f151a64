"""Helpers shared by the pool and Slurm tests: hand-built jobs as Launches, waiting for states."""
from __future__ import annotations

import runner_helpers as rh

FINAL = ("completed", "failed", "cancelled")


def launches_for(store, cell, **kw):
    """Write a job (runner_helpers.make_job) into a file store; return (job id, [Launch])."""
    made = rh.make_job(store.root, cell, **kw)
    return made[0][2]["job"], [rh.launch_for(store.root, r, t) for r, _p, t in made]


def wait_final(be, job, runs, timeout=60):
    """Poll the backend until every run is final; returns {run: folded state}."""
    def done():
        be.poll(job, runs)
        states = {r: be._state(r) for r in runs}
        return states if all(s["state"] in FINAL for s in states.values()) else None
    return rh.wait_for(done, timeout, f"{runs} to finish")
