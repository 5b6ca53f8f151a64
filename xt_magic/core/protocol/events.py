"""Run states and events.jsonl: the one reader and writer of a run's events in the kernel.

A run's state is never stored on its own: it is the fold of its append-only ``events.jsonl``, so
every writer (client, backend, runner, supervisor, reconciler) only appends. The line format and
the tolerant parser are the runner's own (stdlib, on every node); this module adds states, the
fold, store access and incremental tails.
"""
from __future__ import annotations

import time

from ...runner.runner import event_line, event_record, now_iso as _now_iso
from ...runner.runner import parse_events as parse

CREATED, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "created", "queued", "running", "completed", "failed", "cancelled")
STATES = (CREATED, QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED)
FINAL = frozenset({COMPLETED, FAILED, CANCELLED})
_ORDER = {s: i for i, s in enumerate(STATES)}

__all__ = ["CREATED", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "STATES", "FINAL",
           "now_iso", "make_event", "parse", "fold", "append", "read", "state", "Tail"]


def now_iso() -> str:
    return _now_iso(time.time())


def make_event(state: str, **fields) -> bytes:
    """One events.jsonl line. Extra fields: reason, exit_code, signal, host, pid, error{...}."""
    if state not in _ORDER:
        raise ValueError(f"unknown run state {state!r}")
    return event_line(event_record(state, **fields))


def fold(events: list[dict]) -> dict:
    """Current state of a run from its events.

    A final state is sticky: once completed/failed/cancelled, later events (a late "running" from a
    slow writer, a second "failed" from a reconciler, a forged "completed") do not change it.
    Returns ``state``, ``reason``, ``exit_code``, ``started``, ``ended``, ``error``, ``events`` and
    ``final`` (the event that made the run final, or None).
    """
    info: dict = {"state": CREATED, "reason": None, "exit_code": None, "started": None,
                  "ended": None, "error": None, "events": events, "final": None}
    for ev in events:
        state = ev.get("state")
        if not isinstance(state, str) or state not in _ORDER or info["state"] in FINAL:
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
            info["final"] = ev
        for k in ("host", "pid", "backend_id"):
            if k in ev:
                info[k] = ev[k]
    return info


def append(store, path: str, state: str, **fields) -> None:
    store.append(path, make_event(state, **fields))


def read(store, path: str) -> list[dict]:
    """Every event of a run ([] while there is none)."""
    return parse(store.read_from(path, 0))


def state(store, path: str) -> dict:
    """The folded state of the run whose events are at ``path``."""
    return fold(read(store, path))


class Tail:
    """Incremental reads of an append-only jsonl object: each :meth:`read` returns the records
    completed since the last one. A line still being written waits for its newline."""

    def __init__(self, store, path: str, offset: int = 0):
        self.store, self.path, self.offset, self._partial = store, path, offset, b""

    def unchanged(self, token) -> bool:
        """Whether the store's change token of the object (``Store.change_tokens``) says nothing
        was appended since the last read: it is missing, or its size is what was read."""
        return token == () or (token is not None and token[1] == self.offset)

    def read_bytes(self) -> bytes:
        """New whole lines (bytes) since the last read."""
        chunk = self.store.read_from(self.path, self.offset)
        if not chunk:
            return b""
        self.offset += len(chunk)
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        return data[:cut]

    def read(self) -> list[dict]:
        return parse(self.read_bytes())

    def raw(self) -> bytes:
        """Everything new, partial last line included (a console's progress line shows at once)."""
        chunk = self.store.read_from(self.path, self.offset)
        data, self._partial = self._partial + chunk, b""
        self.offset += len(chunk)
        return data


_ASK = object()  # Watch.refresh: ask the store for the change token


class Watch:
    """One run's events, kept between polls: :meth:`refresh` reads nothing when the store's
    change token of the file has not moved, and only the appended bytes when it has, so a poll
    of many runs costs O(changed runs) reads."""

    def __init__(self, store, path: str):
        self.store, self.path = store, path
        self._reset()

    def _reset(self) -> None:
        self.tail, self.events, self.token = Tail(self.store, self.path), [], None

    def unchanged(self, token: tuple | None) -> bool:
        """Whether the store's change token says there is nothing new to read. A watch that read
        with no token takes one whose size is what it has read (nothing was appended since)."""
        if token is None:
            return False
        if token == self.token:
            return True
        if self.token is None and token and self.tail.offset and self.tail.unchanged(token):
            self.token = token
            return True
        return False

    def refresh(self, token=_ASK) -> bool:
        """Read what changed; whether a whole new event came. ``token``: the file's change
        token when the caller already has it (``Store.change_tokens`` of many runs)."""
        if token is _ASK:
            token = self.store.change_token(self.path)
        if self.unchanged(token):
            return False
        if self.token and (not token or token[0] != self.token[0]
                           or token[1] < self.tail.offset):
            self._reset()  # replaced or truncated: read it again from the start
        try:
            new = self.tail.read()
        except Exception:
            self._reset()
            raise
        self.token = token
        self.events.extend(new)
        return bool(new)

    def info(self) -> dict:
        return fold(list(self.events))

    def copy(self) -> "Watch":
        """Another watch that has read what this one has (for another thread: no read)."""
        other = Watch(self.store, self.path)
        other.tail.offset, other.tail._partial = self.tail.offset, self.tail._partial
        other.events, other.token = list(self.events), self.token
        return other
