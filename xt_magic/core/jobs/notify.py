"""When a job submitted from this process ends: one line where the user submitted it, and one
POST to ``general.notify-webhook`` when that is set.

``watch`` starts a daemon thread per job at submit: it reconciles the job now and then (backing
off to ``MAX_DELAY``) until every run is final. The line goes to the announcer the front end
registered (``set_announcer``: the IPython extension puts it into the submitting cell's output);
without one (a plain script) nothing is shown. The webhook body is the job id, name, target, state
and run counts: never the URL (it may carry a token), a config value or a secret.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable

from ..errors import XTError
from ..protocol import events

MAX_DELAY = 5.0
WEBHOOK_TIMEOUT = 10
_announcer: Callable | None = None      # factory(job) -> announce(line) | None, called at submit
watchers: dict[str, threading.Thread] = {}


def set_announcer(factory: Callable | None) -> None:
    """``factory(job)`` runs in the submitting call (so it can place a display there) and returns
    ``announce(line)``, called from the watcher thread when the job ends; None: no lines."""
    global _announcer
    _announcer = factory


def end_line(job) -> str:
    from .job import _summary
    from .tables import duration
    name = f" {job.record.name!r}" if job.record.name else ""
    ended = max((job.info(r).get("ended") or "" for r in job.runs), default="") or None
    took = duration(job.record.submitted, ended)
    after = f" after {_clock(took.total_seconds())}" if took is not None else ""
    return f"[xt] {job.id}{name} ended: {job.status} ({_summary(job.states())}){after}"


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def payload(job) -> dict:
    """The webhook body: what ended and how, nothing else."""
    return {"job": job.id, "name": job.record.name, "target": job.record.target,
            "workspace": job.record.workspace, "state": job.status,
            "counts": {s: n for s, n in job.states().items() if n}, "runs": len(job.runs)}


def post(url: str, body: dict) -> str | None:
    """POST ``body`` as JSON; None when it went, else a one-line reason (no URL in it)."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "xt-magic"})
    try:
        with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return type(getattr(err, "reason", err)).__name__
    return None


def watch(session, job, webhook: str | None = None, announce: Callable | None = None,
          quiet: bool = False, poll: float = 0.5) -> threading.Thread | None:
    """Start the watcher of ``job`` (None when nobody would hear of its end); ``quiet``: no line
    from the registered announcer (the webhook still goes)."""
    if announce is None and _announcer is not None and not quiet:
        try:
            announce = _announcer(job)
        except Exception:  # noqa: BLE001 - a front end that cannot show it does not stop submit
            announce = None
    if announce is None and not webhook:
        return None

    def run():
        from ..session import get_session
        delay = poll
        while True:
            if get_session() is not session:
                return  # the session was reset (a new kernel state): its jobs are not ours
            try:
                job.refresh()
                if job.done:
                    break
            except XTError:
                pass  # the target or store is unreachable for now: try again later
            time.sleep(delay)
            delay = min(delay * 1.5, MAX_DELAY)
        line = end_line(job)
        if webhook:
            why = post(webhook, payload(job))
            if why:
                line += f" (notify-webhook failed: {why})"
        if announce is not None:
            try:
                announce(line)
            except Exception:  # noqa: BLE001 - the notebook may be gone; nothing else to tell
                print(line, file=sys.__stderr__)

    thread = threading.Thread(target=run, name=f"xt-watch-{job.id}", daemon=True)
    watchers[job.id] = thread
    thread.start()
    return thread
