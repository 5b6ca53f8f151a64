"""What every job verb resolves first: config, store and layout; job and run ids from user text."""
from __future__ import annotations

import reprlib

from ..errors import JobError
from ..protocol.layout import DEFAULT_WORKSPACE, Layout
from . import ids


class _Ctx:
    """Resolved config, store and layout for one call."""

    def __init__(self, session, cfg=None):
        from ..storage import get_store
        self.session = session
        self.cfg = cfg or session.config()
        self.store = get_store(session, self.cfg)
        self.ws = str(self.cfg.get("general.workspace") or DEFAULT_WORKSPACE)
        self.layout = Layout(self.ws)

    def backend(self, target: str | None):
        from ..compute import get_backend
        return get_backend(self.session, target, self.cfg)


def _norm_job(text: str) -> str:
    text = str(text).strip()
    return f"job{text}" if text.isdigit() else text


def _split_id(text: str) -> tuple[str, str | None]:
    """``job3`` -> (job3, None); ``run3.2`` -> (job3, run3.2)."""
    text = _norm_job(text)
    job = ids.job_of_run(text)
    if job:
        return job, text
    if ids.job_number(text) is None:
        raise JobError(f"{reprlib.repr(text)} is not a job or run id",
                       hint="job ids look like job3, runs run3.1")
    return text, None

