"""The Backend ABC: one implementation per compute-target kind (local, pool, slurm, batch).

The core packages a job, writes its bundle and one *ticket* per run to the store, then hands the
backend a list of :class:`Launch`. The backend's only jobs are: get ``runner.py`` and the ticket onto
a node, start ``python runner.py TICKET`` detached (respecting max-runs with a queue), find out later
whether that process is still alive, and kill it on cancel. Everything else (setup environments,
running the cell, events, console, metrics, outputs) is the runner's, identical on every target.

Backends must work from the store alone: after a kernel restart a fresh backend object is asked to
``poll`` runs it never launched, using what it recorded in their events (``backend_id``, ``host``,
``pid``).
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config",
                         "templates")


@dataclass
class Launch:
    """One run to start."""

    run_id: str
    ticket: dict                     # runner ticket (docs/architecture.md "Runner ticket")
    ticket_path: str                 # store path where the same ticket JSON was written
    runner_path: str                 # store path of runner.py for this job
    max_seconds: int | None = None   # wall-clock limit, if the target or call set one
    resources: dict = field(default_factory=dict)  # cpus, gpus, mem, nodes... as the target says


class Backend(ABC):
    """A compute target kind."""

    # What the registry, validation, docs/config.md, the config form and ``%xt_config --create``
    # read from a backend class without building one (so a module defining a backend must import
    # nothing heavy at module level).
    kind: str = ""
    #: ``service:`` values of a compute target that name this backend directly (``pool``, ``slurm``).
    services: tuple = ()
    #: ``type``s of external-services entries a target's ``service`` may name (``batch``).
    service_types: tuple = ()
    #: JSON-schema ``properties`` of the compute-target keys this backend reads, beyond the keys
    #: every target has (service, setup, max-runs, max-seconds, name).
    target_schema: dict = {}
    #: Path of the commented xt_config.yaml that ``%xt_config --create KIND`` writes ("" = none).
    template: str = ""
    #: True when nodes cannot see the client's filesystem, so a file store cannot be used.
    needs_remote_store: bool = False

    @classmethod
    def accepts(cls, config: Any, target: dict) -> bool:
        """Whether this backend runs ``target`` when several backends serve its service."""
        return True

    def __init__(self, name: str, target: dict, *, config: Any, store: Any, session: Any = None):
        self.name, self.target, self.config, self.store, self.session = (
            name, target, config, store, session)

    @abstractmethod
    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """Start or queue every launch; append a ``queued`` event (with ``backend_id``) for each."""

    @abstractmethod
    def poll(self, job_id: str, run_ids: list[str]) -> None:
        """Reconcile: for each run not final in the store whose process is gone, append a
        ``failed`` event with the reason (exit code, signal, node lost, time limit). Start queued
        runs whose turn has come. Cheap; safe to call from any process at any time."""

    @abstractmethod
    def cancel(self, job_id: str, run_ids: list[str]) -> None:
        """Stop these runs (whole process group / task / slurm job) and append ``cancelled``."""

    def describe(self) -> dict:
        """Facts for listings (%xt_boxes, %xt_pools); backends may add more."""
        return {"target": self.name, "kind": self.kind}

    def close(self) -> None:
        """Release connections; the backend may be rebuilt later."""
