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
from dataclasses import dataclass
from typing import Any

from ..errors import TargetError
from ..protocol import events
from ..protocol.layout import DEFAULT_WORKSPACE, Layout

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config",
                         "templates")


#: the target key of the backends that spread runs over boxes (local, pool)
BOXES_SCHEMA = {"boxes": {"type": "array", "items": {"type": "string"},
                          "description": "boxes entries (or addresses) runs are spread over"},
                "agent-idle-seconds": {
                    "type": ["integer", "null"], "minimum": 0,
                    "description": "seconds each box's agent stays up after its last job: it "
                                   "starts the next job's supervisor as a fork, with no Python "
                                   "start-up (default 600; 0: no agent)"}}

#: seconds a box's agent stays up after its last job when ``agent-idle-seconds`` is not set
AGENT_IDLE_SECONDS = 600


def agent_idle(target: dict, name: str) -> int:
    """``agent-idle-seconds`` of a local or pool target: how long its box agent
    (``local_supervisor.agent``) waits for the next job; 0: no agent."""
    value = target.get("agent-idle-seconds")
    if value is None:
        return AGENT_IDLE_SECONDS
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TargetError(f"agent-idle-seconds must be a whole number of seconds >= 0, not "
                          f"{value!r}", key=f"compute-targets.{name}.agent-idle-seconds")
    return value


@dataclass
class Launch:
    """One run to start.

    ``ticket`` is the signed ticket exactly as stored at ``ticket_path``; ``launch_secret``
    (``{"key": hex, "access": NodeAccess JSON}``, protocol/tickets.py) reaches the node only
    through the launch channel: never the store, a command line or a log.
    """

    run_id: str
    job_id: str
    workspace: str
    ticket: dict
    ticket_path: str
    launch_secret: dict = None
    max_seconds: int | None = None   # wall-clock limit, if the target or call set one
    #: more runs may be added to this job by later ``submit`` calls (a search makes them as it
    #: goes): a backend keeps the job open until ``finish``
    open_job: bool = False

    @property
    def layout(self) -> Layout:
        return Layout(self.workspace)

    @property
    def runner_path(self) -> str:
        """Store path of this job's runner.py."""
        return self.layout.runner(self.job_id)

    @property
    def access(self):
        from ..protocol.access import NodeAccess
        return NodeAccess.from_json(self.launch_secret["access"])

    def __repr__(self) -> str:  # never the secret
        return f"Launch({self.run_id!r}, {self.ticket_path!r})"


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

    @classmethod
    def accepts(cls, config: Any, target: dict) -> bool:
        """Whether this backend runs ``target`` when several backends serve its service."""
        return True

    def __init__(self, name: str, target: dict, *, config: Any, store: Any, session: Any = None):
        self.name, self.target, self.config, self.store, self.session = (
            name, target, config, store, session)
        ws = config.get("general.workspace") if config is not None else None
        #: paths of runs that ``poll``/``cancel`` are asked about (the configured workspace)
        self.layout = Layout(str(ws or DEFAULT_WORKSPACE))

    @abstractmethod
    def submit(self, job_id: str, launches: list[Launch]) -> None:
        """Start or queue every launch; append a ``queued`` event (with ``backend_id``) for each."""

    @abstractmethod
    def poll(self, job_id: str, run_ids: list[str]) -> list[str] | None:
        """Reconcile: for each run not final in the store whose process is gone, append a
        ``failed`` event with the reason (exit code, signal, node lost, time limit). Start queued
        runs whose turn has come. Cheap; safe to call from any process at any time.

        Returns the runs whose events moved (it appended to them, or read an end the caller may
        not have seen yet), so a Job reads only those again; None when it cannot tell (the Job
        then reads every live run again)."""

    @abstractmethod
    def cancel(self, job_id: str, run_ids: list[str], reason: str | None = None) -> None:
        """Stop these runs (whole process group / task / slurm job) and append ``cancelled``
        with ``reason`` (default "cancelled by user"; early stopping names its rule)."""

    def finish(self, job_id: str) -> None:
        """No more runs will be added to this job (a search is over): release what a job kept
        open for them. Default: nothing to release."""

    def waiter(self, job_id: str):
        """What tells a waiting kernel that a run of the job may have changed: an object whose
        ``wait(timeout)`` returns early then (True) and ``close()``, or None: the caller polls.
        Default None."""
        return None

    # -- run events, from the store alone (protocol/events.py) -------------------------------------
    def _state(self, run_id: str) -> dict:
        return events.state(self.store, self.layout.events(run_id))

    def _event(self, run_id: str, state: str, **fields) -> None:
        events.append(self.store, self.layout.events(run_id), state, **fields)

    def _fail_unless_final(self, run_id: str, reason: str, **fields) -> None:
        if self._state(run_id)["state"] not in events.FINAL:
            self._event(run_id, events.FAILED, reason=reason, **fields)

    def close(self) -> None:
        """Release connections; the backend may be rebuilt later."""
