"""Shared set-up for the benches: an isolated XT_HOME and working directory, a config file, and a
timer around a backend's ``submit``."""
from __future__ import annotations

import os
import tempfile
import time


def isolated_home(prefix: str) -> str:
    """A temporary working directory with its own XT_HOME and user config; chdir into it."""
    work = tempfile.mkdtemp(prefix=prefix)
    os.environ["XT_HOME"] = os.path.join(work, "home")
    os.environ["XT_USER_CONFIG"] = os.path.join(work, "home", "xt_config.yaml")
    os.makedirs(os.environ["XT_HOME"])
    os.chdir(work)
    return work


def write_config(cfg: dict) -> None:
    import yaml
    with open("xt_config.yaml", "w") as fh:
        yaml.safe_dump(cfg, fh)


def time_submits(backend_cls) -> list[float]:
    """Patch ``backend_cls.submit`` to append each call's seconds to the returned list."""
    spent: list[float] = []
    submit = backend_cls.submit

    def timed(self, job_id, launches):
        t = time.perf_counter()
        try:
            return submit(self, job_id, launches)
        finally:
            spent.append(time.perf_counter() - t)

    backend_cls.submit = timed
    return spent
