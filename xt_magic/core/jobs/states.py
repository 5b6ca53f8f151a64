"""Run states and the events that move a run between them.

A run's state is never stored on its own: it is the fold of the run's ``events.jsonl`` (append
only), so any writer (client, backend, runner, reconciler) only ever appends.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

CREATED, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "created", "queued", "running", "completed", "failed", "cancelled")
STATES = (CREATED, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})
_ORDER = {s: i for i, s in enumerate(STATES)}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def make_event(state: str, **fields) -> bytes:
    """One events.jsonl line. Extra fields: reason, exit_code, signal, host, pid, error{...}."""
    if state not in _ORDER:
        raise ValueError(f"unknown run state {state!r}")
    record = {"time": now_iso(), "ts": time.time(), "state": state}
    record.update({k: v for k, v in fields.items() if v is not None})
    return (json.dumps(record, sort_keys=True) + "\n").encode()


def parse_events(data: bytes) -> list[dict]:
    events = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line:
            try:
                events.append(json.loads(line))
            except ValueError:  # a torn last line from a writer that died mid-append
                continue
    return events


def fold(events: list[dict]) -> dict:
    """Current state of a run from its events.

    A final state is sticky: once completed/failed/cancelled, later events (a late "running" from a
    slow writer, a second "failed" from a reconciler) do not change it. Returns a dict with
    ``state``, ``reason``, ``exit_code``, ``started``, ``ended``, ``error`` and ``events``.
    """
    info: dict = {"state": CREATED, "reason": None, "exit_code": None, "started": None,
                  "ended": None, "error": None, "events": events}
    for ev in events:
        state = ev.get("state")
        if state not in _ORDER or info["state"] in FINAL:
            continue
        if _ORDER[state] < _ORDER[info["state"]] and state != QUEUED:
            continue  # out-of-order non-final events never move a run backwards
        info["state"] = state
        if state == RUNNING and info["started"] is None:
            info["started"] = ev.get("time")
        if state in FINAL:
            info["ended"] = ev.get("time")
            info["reason"] = ev.get("reason")
            info["exit_code"] = ev.get("exit_code")
            info["error"] = ev.get("error")
        for k in ("host", "pid", "backend_id"):
            if k in ev:
                info[k] = ev[k]
    return info
