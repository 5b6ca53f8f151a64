"""The xt_magic Python API. Every magic is one call here; usable from a plain script.

Each function delegates to the module that owns the concern, importing it on first use so that
``import xt_magic`` stays light.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError, JobError
from .session import get_session

if TYPE_CHECKING:
    from .jobs.job import Job

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


_UNSET = object()


class Config:
    """``xt.config``: the resolved config, pythonic.

    ``xt.config()`` shows it, ``xt.config("general.username")`` is one value,
    ``xt.config("general.username", "ada")`` or ``xt.config({"k": v, ...})`` sets session values
    (validated at once), ``xt.config["k"]`` / ``xt.config["k"] = v`` the same; ``.explain(key)``,
    ``.save(path)``, ``.validate(path)``, ``.create(kind)``, ``.reset()`` as ``%xt_config`` has them.
    """

    def __call__(self, key=None, value=_UNSET):
        if isinstance(key, dict):
            if value is not _UNSET:
                raise ConfigError("config({...}) sets the dict's values: give no second argument")
            return config_set(key)
        if key is None:
            return config_show()
        if value is _UNSET:
            return config_get(key)
        return config_set({key: value})

    def __getitem__(self, key: str):
        return config_get(key)

    def __setitem__(self, key: str, value) -> None:
        config_set({key: value})

    def show(self, keys: list[str] | None = None):
        return config_show(keys)

    explain = staticmethod(config_explain)
    save = staticmethod(config_save)
    validate = staticmethod(config_validate)
    create = staticmethod(config_create)
    reset = staticmethod(config_reset)

    def __repr__(self) -> str:
        return "xt.config: call it to show the config, xt.config(KEY) for a value"


config = Config()


# --- jobs (core/jobs/) -----------------------------------------------------------------------


def _names(value, what: str) -> list[str] | None:
    """A list of variable names; a bare string is the usual slip (``outputs="y"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        raise JobError(f"{what} must be a list of variable names, got the string {value!r}",
                       hint=f"{what}=[{value!r}]")
    return list(value)


def _job_options(target, setup, name, hp, hp_config, search, runs, repeat, env, env_secret,
                 code_dir, tags, max_seconds, seed, experiment, **searching) -> dict:
    """The options run_cell, preview and submit share, as core/jobs/submit.py takes them
    (``searching``: concurrent, metric, maximize, objective, early_stop; docs/jobs.md)."""
    return dict(target=target, setup=setup, name=name, hp=hp, hp_config=hp_config, search=search,
                runs=runs, repeat=repeat, env=env, env_secret=_names(env_secret, "env_secret"),
                code_dir=[code_dir] if isinstance(code_dir, str) else code_dir, tags=tags,
                max_seconds=max_seconds, seed=seed, experiment=experiment, **searching)


def run_cell(source: str, namespace: dict | None = None, *, target: str | None = None,
             setup: str | None = None, name: str | None = None, inputs=None, outputs=(),
             hp: dict | None = None, hp_config: str | None = None, search: str | None = None,
             runs: int | None = None, repeat: int | None = None, env: dict | None = None,
             env_secret=None, code_dir=None, tags: dict | None = None,
             max_seconds: int | None = None, seed: int | None = None,
             experiment: str | None = None, wait: bool = False, concurrent: int | None = None,
             metric: str | None = None, maximize: bool | None = None,
             objective: str | None = None, early_stop: str | None = None,
             on_output=None, raise_errors: bool = False,
             python_source: str | None = None) -> Job:
    """Submit ``source`` as a job and return its Job (after every run ends with ``wait=True``).

    ``namespace``: where the cell's free names (or ``inputs``) are taken from. ``hp``: one run
    per point, e.g. ``{"lr": [0.1, 0.2], "wd": "$loguniform(1e-5, 1e-2)", "opt": "adam"}`` (a
    list is the values, a ``$distribution`` string is one, anything else a constant);
    ``hp_config``: an XT hp-config file (``hp`` wins). ``outputs``: variables to bring back
    (``job.results()``). ``search="bayesian"`` with ``runs``/``concurrent`` optimises ``metric``
    (``maximize``, ``objective`` last|best); ``early_stop`` median|bandit|truncation stops poor
    runs of any sweep (docs/jobs.md). With ``wait``: ``on_output(job, run, records)`` gets
    each run's cell outputs (nbformat output dicts) as they come, and ``raise_errors`` raises
    RunFailed when a run failed. ``python_source``: the cell as IPython compiles it, when it
    has ``!cmd`` or ``%magic`` lines (the magic passes it: inputs are found in it; ``source`` runs
    in IPython on the node). See docs/api.md.
    """
    from .jobs import submit
    options = _job_options(target, setup, name, hp, hp_config, search, runs, repeat, env,
                           env_secret, code_dir, tags, max_seconds, seed, experiment,
                           concurrent=concurrent, metric=metric, maximize=maximize,
                           objective=objective, early_stop=early_stop)
    return submit.run_cell(get_session(), source, {} if namespace is None else namespace,
                           inputs=_names(inputs, "inputs"), outputs=_names(outputs, "outputs"),
                           wait=wait, on_output=on_output, raise_errors=raise_errors,
                           python_source=python_source, **options)


def preview(source: str, namespace: dict | None = None, *, target: str | None = None,
            setup: str | None = None, name: str | None = None, inputs=None, outputs=(),
            hp: dict | None = None, hp_config: str | None = None, search: str | None = None,
            runs: int | None = None, repeat: int | None = None, env: dict | None = None,
            env_secret=None, code_dir=None, tags: dict | None = None,
            max_seconds: int | None = None, seed: int | None = None,
            experiment: str | None = None, concurrent: int | None = None,
            metric: str | None = None, maximize: bool | None = None,
            objective: str | None = None, early_stop: str | None = None,
            python_source: str | None = None):
    """What ``run_cell`` with the same arguments would submit (runs, inputs, outputs, snapshot
    files and sizes, setup, the search); submits nothing."""
    from .jobs import submit
    options = _job_options(target, setup, name, hp, hp_config, search, runs, repeat, env,
                           env_secret, code_dir, tags, max_seconds, seed, experiment,
                           concurrent=concurrent, metric=metric, maximize=maximize,
                           objective=objective, early_stop=early_stop)
    return submit.run_cell(get_session(), source, {} if namespace is None else namespace,
                           inputs=_names(inputs, "inputs"), outputs=_names(outputs, "outputs"),
                           dry_run=True, python_source=python_source, **options)


def submit(fn, *args, target: str | None = None, hp: dict | None = None,
           hp_config: str | None = None, search: str | None = None, runs: int | None = None,
           repeat: int | None = None, seed: int | None = None, setup: str | None = None,
           name: str | None = None, env: dict | None = None, env_secret=None, code_dir=None,
           tags: dict | None = None, max_seconds: int | None = None,
           experiment: str | None = None, wait: bool = False, concurrent: int | None = None,
           metric: str | None = None, maximize: bool | None = None,
           objective: str | None = None, early_stop: str | None = None, **kwargs) -> Job:
    """Run ``fn(*args, **kwargs)`` as a job; each run also gets its hyperparameters as keyword
    arguments. ``job.result()`` is the return value (one run), ``job.results()`` each run's
    (``.value``). ``fn`` and the arguments travel with cloudpickle, like a cell's inputs. A
    search (``search="bayesian"``, ``early_stop``) optimises a ``metric`` ``fn`` logs with
    ``xt.log``, as for ``run_cell``.

    The keywords above are submit's own: pass a function's argument of the same name with
    ``functools.partial(fn, target=...)``.
    """
    from .jobs import functions
    options = _job_options(target, setup, name, hp, hp_config, search, runs, repeat, env,
                           env_secret, code_dir, tags, max_seconds, seed, experiment,
                           concurrent=concurrent, metric=metric, maximize=maximize,
                           objective=objective, early_stop=early_stop)
    return functions.submit(get_session(), fn, args, kwargs, wait=wait, **options)


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


def rerun(job_or_run: str, hp: dict | None = None, target: str | None = None,
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


def submit_notebook(path: str, parameters: dict | None = None, *, target: str | None = None,
                    setup: str | None = None, name: str | None = None, hp: dict | None = None,
                    hp_config: str | None = None, search: str | None = None,
                    runs: int | None = None, repeat: int | None = None, env: dict | None = None,
                    env_secret=None, code_dir=None, tags: dict | None = None,
                    max_seconds: int | None = None, seed: int | None = None,
                    experiment: str | None = None, wait: bool = False, dry_run: bool = False,
                    on_output=None, raise_errors: bool = False, concurrent: int | None = None,
                    metric: str | None = None, maximize: bool | None = None,
                    objective: str | None = None, early_stop: str | None = None) -> Job:
    """Run a whole notebook as a job, papermill style: ``parameters`` (and each ``hp`` sweep
    point) go into a cell after the one tagged ``parameters``; each run's executed notebook is
    its stored notebook (``job.notebook(run)``). Other arguments as for ``run_cell``."""
    from .jobs import submit
    options = _job_options(target, setup, name, hp, hp_config, search, runs, repeat, env,
                           env_secret, code_dir, tags, max_seconds, seed, experiment,
                           concurrent=concurrent, metric=metric, maximize=maximize,
                           objective=objective, early_stop=early_stop)
    return submit.run_cell(get_session(), "", {}, notebook=path, parameters=dict(parameters or {}),
                           wait=wait, dry_run=dry_run, on_output=on_output,
                           raise_errors=raise_errors, **options)


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


def show(job_or_run: str):
    """A run's cell outputs (RunOutputs), or every run's of a job grouped (JobOutputs)."""
    from .jobs import control
    from .jobs.context import _split_id
    job_id, run = _split_id(job_or_run)
    return control.get_job(get_session(), job_id).show(run)


def save_notebooks(job_id: str, folder: str) -> list[str]:
    """Save each ended run's notebook as ``FOLDER/RUN.ipynb``; returns the paths."""
    from .jobs import control, outputs
    job = control.get_job(get_session(), job_id).refresh()
    return outputs.save_notebooks(job, folder)


def metrics(job_id: str):
    from .jobs import metrics
    return metrics.metrics(get_session(), job_id)


def table(job_id: str):
    """One row per run of a job (``Job.table()``): state, duration, ``hp.*``, scalar outputs,
    last and best of each metric."""
    return job(job_id).table()


def compare(job_id: str, metric: str | None = None):
    """A job's runs sorted best first by ``metric`` (default ``general.primary-metric`` when
    logged, else the first logged), with the hyperparameter columns: ``%xt_compare``'s data."""
    from .jobs import tables
    return tables.compare(get_session(), job_id, metric)


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
