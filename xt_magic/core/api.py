"""The xt_magic Python API. Every magic is one call here; usable from a plain script.

Each function delegates to the module that owns the concern, importing it on first use so that
``import xt_magic`` stays light.
"""
from __future__ import annotations

from typing import Any

from .session import get_session

# --- config (core/config/service.py) -------------------------------------------------------


def config_show(keys: list[str] | None = None):
    """The resolved config as a displayable object (HTML in notebooks, YAML text elsewhere)."""
    from .config import service
    return service.show(get_session(), keys)


def config_get(key: str):
    """One resolved value (``$vault`` values stay masked references)."""
    from .config import service
    return service.get(get_session(), key)


def config_explain(key: str):
    """The value of ``key`` in every layer, with file and line."""
    from .config import service
    return service.explain(get_session(), key)


def config_set(assignments: dict[str, str]):
    """Set session values (strings typed by the schema), validated at once."""
    from .config import service
    return service.set_values(get_session(), assignments)


def config_save(path: str | None = None):
    """Write the session values into the local xt_config.yaml, keeping comments and layout."""
    from .config import service
    return service.save(get_session(), path)


def config_validate(path: str | None = None):
    """Validate one file, or the whole resolved config; raises ConfigError listing every problem."""
    from .config import service
    return service.validate(get_session(), path)


def config_create(kind: str, path: str | None = None, force: bool = False):
    """Write a commented template (local, pool, batch, slurm, azure)."""
    from .config import service
    return service.create(get_session(), kind, path, force)


def config_reset():
    """Drop all session values."""
    from .config import service
    return service.reset(get_session())


# --- jobs (core/jobs/) -----------------------------------------------------------------------


def run_cell(source: str, namespace: dict | None = None, **options: Any):
    """Submit a cell as a job; returns a Job at once (``wait=True`` blocks with progress).

    Options: target, setup, name, inputs, outputs, hp, hp_config, search, runs, repeat, env,
    code_dir, wait, tags, dry_run, max_seconds, seed, experiment. See docs/jobs.md.
    """
    from .jobs import submit
    return submit.run_cell(get_session(), source, namespace or {}, **options)


def submit_script(script: str, args: list[str] | None = None, **options: Any):
    """Run ``python SCRIPT ARGS`` from the code snapshot as a job (XT's `xt run train.py`); each
    run's hyperparameters are appended as ``--name=value``. Options as for ``run_cell`` (no
    inputs/outputs). See docs/xt-users.md."""
    from .jobs import scripts
    return scripts.submit_script(get_session(), script, args, **options)


def run_command(argv: list[str] | None = None, **options: Any):
    """Run a command (argv list, no shell) as a job; no argv: the config's ``commands``."""
    from .jobs import scripts
    return scripts.submit_command(get_session(), argv, **options)


def runs(job: str | None = None, status: str | None = None, experiment: str | None = None,
         tags: dict | None = None, sort: str | None = None, top: int | None = None,
         reverse: bool = False):
    """Runs across jobs with hyperparameters and last/best metrics (XT's `list runs`)."""
    from .jobs import runs as runs_mod
    return runs_mod.list_runs(get_session(), job=job, status=status, experiment=experiment,
                              tags=tags, sort=sort, top=top, reverse=reverse)


def rerun(job_or_run: str, hp: list[str] | None = None, target: str | None = None,
          resume: bool = False, wait: bool = False):
    """The same cell or script, snapshot and setup as a new job (``resume``: from RUN's checkpoint)."""
    from .jobs import runs as runs_mod
    return runs_mod.rerun(get_session(), job_or_run, hp=hp, target=target, resume=resume,
                          wait=wait)


def tag(job_or_run: str, tags: dict):
    """Add tags to a job or a run after submit."""
    from .jobs import runs as runs_mod
    return runs_mod.tag(get_session(), job_or_run, tags)


def cancel_all(target: str | None = None):
    """Cancel every live job (on ``target`` only, when given); returns the job ids."""
    from .jobs import runs as runs_mod
    return runs_mod.cancel_all(get_session(), target=target)


def job(job_id: str):
    """A Job handle for an existing job (works after a kernel restart)."""
    from .jobs import control
    return control.get_job(get_session(), job_id)


def jobs(status: str | None = None, last: int | None = None, experiment: str | None = None,
         tags: dict | None = None):
    from .jobs import control
    return control.list_jobs(get_session(), status=status, last=last, experiment=experiment,
                             tags=tags)


def status(job_or_run: str):
    from .jobs import control
    return control.status(get_session(), job_or_run)


def logs(run_id: str, follow: bool = False, out=None):
    from .jobs import control
    return control.logs(get_session(), run_id, follow=follow, out=out)


def cancel(job_or_run: str):
    from .jobs import control
    return control.cancel(get_session(), job_or_run)


def results(job_id: str, into: dict | None = None, raise_errors: bool = False):
    from .jobs import results
    return results.results(get_session(), job_id, into=into, raise_errors=raise_errors)


def metrics(job_id: str):
    from .jobs import metrics
    return metrics.metrics(get_session(), job_id)


def plot(job_id: str, metric: str, step: str | None = None):
    from .jobs import metrics
    return metrics.plot(get_session(), job_id, metric, step=step)


# --- auth (core/auth/service.py) ----------------------------------------------------------------


def login(method: str | None = None, tenant: str | None = None, out=None,
          device_code_callback=None):
    """Log in to Azure for this session; returns a LoginStatus (who, tenant, vault, secret names).
    ``device_code_callback(uri, code, expires_on)`` shows a device code (default: print it)."""
    from .auth import service
    return service.login(get_session(), method=method, tenant=tenant, out=out,
                         device_code_callback=device_code_callback)


def logout():
    from .auth import service
    return service.logout(get_session())


def whoami():
    from .auth import service
    return service.whoami(get_session())


def create_team(name: str, location: str | None = None, with_batch: bool = False,
                path: str | None = None):
    from .auth import team
    return team.create_team(get_session(), name, location=location, with_batch=with_batch,
                            path=path)


# --- compute listings ---------------------------------------------------------------------------


def boxes(trust: str | None = None):
    """Boxes with reachability, cores, GPUs, running runs; ``trust`` records a box's host key."""
    from .compute import pool
    return pool.list_boxes(get_session(), trust=trust)


def pools(target: str | None = None):
    """Azure Batch pools with node counts and states."""
    from .compute import batch
    return batch.list_pools(get_session(), target=target)
