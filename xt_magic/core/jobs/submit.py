"""Submit a cell: package it, write the job and its runs to the store, hand the runs to the backend.

Everything lives in the store (job.json, bundle, tickets, events, console, metrics, outputs), so a
new kernel lists, monitors, cancels and fetches jobs it never submitted.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import sys

from ..auth import jobenv
from ..errors import JobError, XTError
from ..naming import param
from ..paths import xt_home
from ..protocol import events, keys, tickets
from ..protocol.layout import Layout
from . import ids, packaging, snapshot, xtrun
from .context import _Ctx
from .fanout import _each_run, _RunError, _store_workers
from .job import Job
from .records import JobRecord

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

def run_cell(session, source: str, namespace: dict, *, target=None, setup=None, name=None,
             inputs=None, outputs=None, hp=None, hp_config=None, search=None, runs=None,
             repeat=None, env=None, code_dir=None, wait=False, tags=None, dry_run=False,
             max_seconds=None, seed=None, out=None, env_secret=None, experiment=None,
             commands=None, reuse=None, resume=None, concurrent=None, metric=None,
             maximize=None, objective=None, early_stop=None, on_output=None,
             raise_errors=False, notebook=None, parameters=None, python_source=None):
    """Package the cell, write the job to the store, hand its runs to the backend; return a Job
    (``wait``: once every run is final), or with ``dry_run`` the Preview. ``hp``: a dict, see
    ``sweeps.load_specs``. Errors name parameters, or flags inside ``naming.flags()``. With
    ``wait``: ``on_output(job, run, records)`` gets the runs' cell outputs as they come (see
    Job.wait); ``raise_errors``: RunFailed if a run failed. ``notebook``: run that .ipynb file
    instead of ``source``, with ``parameters`` (and each sweep point) injected after its cell
    tagged ``parameters``. ``python_source``: the cell as IPython compiles it (``!cmd`` and
    ``%magic`` lines made calls), for finding its inputs; ``source`` is what runs (IPython on the
    node).

    ``commands`` (script and command jobs, core/jobs/scripts.py): run those instead of a cell.
    ``reuse`` (``%xt_rerun``): an earlier job's inputs and snapshot. ``resume``: a run whose
    checkpoint the new runs start from. ``concurrent``, ``metric``, ``maximize``,
    ``objective``, ``early_stop``: bayesian search and early stopping (search.py)."""
    if notebook:
        source = _notebook_source(notebook)
        if outputs:
            raise JobError("--outputs does not apply to --notebook jobs (their variables live "
                           "in the notebook's kernel)", hint="write files under $XT_OUTPUT_DIR")
    elif commands is None:
        packaging.check_source(python_source or source)
    elif outputs:
        raise JobError(f"{param('outputs')} names cell variables: a script or command job has none",
                       hint="write files under $XT_OUTPUT_DIR instead")
    if max_seconds is not None and max_seconds < 1:
        raise JobError(f"{param('max_seconds')} must be >= 1 (seconds), got {max_seconds}")
    outputs = [packaging.check_name(n, "output") for n in (outputs or [])]
    ctx = _Ctx(session)
    cfg = ctx.cfg
    backend = ctx.backend(target)

    setup_name = setup or backend.target.get("setup")
    setup_cfg = cfg.get(f"setups.{setup_name}") if setup_name else None
    if setup and not isinstance(setup_cfg, dict):
        raise JobError(f"no setup {setup!r}", key="setups",
                       hint="known: " + ", ".join(sorted(cfg.get("setups") or {})))
    setup_ticket = packaging.resolve_setup(setup_name, setup_cfg)

    seed = 0 if seed is None else int(seed)
    searching = None  # the search's plan (a driver makes bayesian runs, applies early stopping)
    if reuse and reuse.get("points") is not None and not (hp or hp_config or search or runs):
        specs, search_used, points = {}, reuse.get("search"), list(reuse["points"])
    elif not _sweeping(cfg, *xtrun.sweep_defaults(cfg, hp, hp_config, search, runs), repeat,
                       early_stop):
        specs, search_used, points = {}, None, [{}]  # one run: no sweep or search module loaded
    else:
        hp, hp_config, search, runs = xtrun.sweep_defaults(cfg, hp, hp_config, search, runs)
        from . import search as adaptive, sweeps
        specs = sweeps.load_specs(hp, hp_config)  # --hp wins over the file
        search = adaptive.search_type(cfg, search, specs)
        if search in ("random", "bayesian") and not runs:
            runs = cfg.get("hyperparameter-search.max-runs")
        searching = adaptive.plan(cfg, search, specs, runs, concurrent=concurrent, metric=metric,
                                  maximize=maximize, objective=objective, early=early_stop,
                                  seed=seed)
        if search == "bayesian":  # its runs are made by its driver as results arrive
            search_used, points = search, []
        else:
            search_used, points = sweeps.expand(
                specs, search, runs, repeat, seed,
                limit=cfg.get("hyperparameter-search.max-runs-limit"))
    if notebook:
        points = [{**(parameters or {}), **p} for p in points]
        if backend.kind == "local" and not setup_ticket:
            _check_kernel_here(notebook)

    from ...runner.runner import hp_namespace  # the names a run's cell gets for its hparams
    hp_names = set(hp_namespace(dict.fromkeys(specs)))
    input_values = {} if notebook or commands is not None or reuse else packaging.choose_inputs(
        python_source or source, namespace, inputs, exclude=hp_names)
    if not notebook and commands is None and not reuse and not inputs:
        missing = packaging.undefined_names(python_source or source, namespace, hp_names)
        if missing:  # said now, in the notebook: the job still goes (the cell may define them)
            print(f"[xt] warning: {', '.join(missing[:8])}: not defined in the notebook nor a "
                  "hyperparameter (the run will raise NameError)", file=out or sys.stdout)
    run_env = jobenv.explicit_env(_job_env(cfg, env), env_secret, from_flag=env)
    experiment = xtrun.experiment(cfg, experiment)

    code_dirs = code_dir or (cfg.get("code.code-dirs") if cfg.get("code.code-upload", True) else None)
    omit = cfg.get("code.code-omit") or []
    cwd = session.cwd or os.getcwd()
    # never snapshot the store itself or XT_HOME (envs, caches) when they sit under a code dir
    skip = (ctx.store.local_dir(), xt_home())
    if dry_run:
        plan = snapshot.plan(code_dirs, omit, cwd, skip) if code_dirs and not reuse else None
        if callable(commands):
            commands = commands(code_dirs, plan.files if plan else [])
        return Preview(backend.name, points, sorted(input_values), outputs, plan, setup_ticket,
                       commands, searching)

    inputs_pkl = packaging.pickle_inputs(input_values, cwd) if input_values else None
    limit = cfg.get("code.max-snapshot-mb")
    if reuse:
        snap, inputs_pkl = reuse.get("snapshot"), reuse.get("inputs_pkl")
        input_values = dict.fromkeys(reuse.get("inputs") or [])
    else:
        snap = snapshot.build(ctx.store, code_dirs, omit, cwd,
                              max_bytes=None if limit is None else int(float(limit) * 2**20),
                              zip_mode=cfg.get("code.code-zip") or "fast", skip_dirs=skip
                              ) if code_dirs else None
    if callable(commands):  # a script: its path inside the snapshot just built
        commands = commands(code_dirs, snap.files if snap else [])
    notes: list[str] = []
    shares = xtrun.share_specs(cfg, ctx.store, notes)
    for note in notes:
        print(f"[xt] note: {note}", file=out or sys.stdout)
    after = xtrun.after_spec(cfg)
    prefix = xtrun.option_prefix(cfg)
    resume_sha = xtrun.resume_checkpoints(ctx.store, ctx.layout, resume) if resume else None

    store, lay = ctx.store, ctx.layout
    job_id = ids.allocate_job_id(store, ctx.ws)
    run_ids = [ids.run_id(job_id, i + 1) for i in range(len(points))]
    cell_bytes, cp_zip = source.encode(), packaging.cloudpickle_zip()
    bundle = {"cell": lay.bundle(job_id, "notebook.ipynb" if notebook else "cell.py"),
              "cell_sha256": packaging.sha256(cell_bytes),
              "inputs": lay.bundle(job_id, "inputs.pkl") if inputs_pkl else None,
              "inputs_sha256": packaging.sha256(inputs_pkl) if inputs_pkl else None,
              "cloudpickle": lay.bundle(job_id, "cloudpickle.zip"),
              "cloudpickle_sha256": packaging.sha256(cp_zip),
              "cloudpickle_version": packaging.cloudpickle_version(),
              "snapshot": snap.path if snap else None,
              "snapshot_sha256": snap.sha256 if snap else None}
    store.write_bytes(bundle["cell"], cell_bytes)
    store.write_bytes(bundle["cloudpickle"], cp_zip)
    from ..compute.staging import runner_source
    store.write_bytes(lay.runner(job_id), runner_source()[0])
    if inputs_pkl:
        store.write_bytes(bundle["inputs"], inputs_pkl)

    python = (setup_ticket or {}).get("python") or (sys.executable if backend.kind == "local"
                                                    else "python3")
    record = JobRecord(
        job=job_id, workspace=ctx.ws, target=backend.name, backend=backend.kind,
        submitted=events.now_iso(), user=str(cfg.get("general.username") or getpass.getuser()),
        name=name or (os.path.basename(notebook) if notebook else None), runs=run_ids,
        hparams=points, outputs=outputs, inputs=sorted(input_values),
        search=search_used, setup=setup_name, snapshot=snap.path if snap else None,
        tags=dict(tags or {}), python=".".join(map(str, sys.version_info[:2])),
        experiment=experiment,
        extra={"seed": seed, "max_seconds": max_seconds, "env_keys": sorted(run_env),
               **({"commands": commands} if commands is not None else {}),
               **({"resume": resume} if resume else {}),
               **({"rerun_of": reuse["job"]} if reuse and reuse.get("job") else {}),
               **({"search": searching} if searching else {})})
    record.save(store)

    from ..compute.base import Launch
    key = keys.job_key(store, ctx.ws, job_id, create=True)  # made here, never in the store
    max_output_mb = float(cfg.get("general.max-output-mb") or 0)
    capture = {"max_bytes": int(max_output_mb * 2 ** 20)} if max_output_mb > 0 else None
    shared = None  # the job's read access (read SASes), signed once below

    # what every run's ticket is made from (a search's driver makes later runs from it too)
    spec = {"build": {"bundle": bundle, "outputs": outputs, "env": run_env,
                      "setup": setup_ticket, "python": python, "max_seconds": max_seconds,
                      "capture": capture, "kind": "notebook" if notebook else "cell"},
            "fields": {"experiment": experiment, "resume": resume, "resume_sha": resume_sha,
                       "after": after, "shares": shares, "commands": commands,
                       "prefix": prefix}}

    def write_run(run: str, point: dict) -> Launch:
        ticket = tickets.sign(run_ticket(lay, job_id, run, point, spec), key)
        # a new run's events blob does not exist yet: the blob store creates it and appends (2
        # round trips, not append-404-create-append's 3)
        store.append_new(lay.events(run), events.make_event(events.CREATED, job=job_id, run=run))
        store.write_bytes(lay.ticket(run), json.dumps(ticket).encode())  # compact: C encoder
        secret = tickets.launch_secret(key, tickets.node_access(store, ticket, shared))
        return Launch(run_id=run, job_id=job_id, workspace=ctx.ws, ticket=ticket,
                      ticket_path=lay.ticket(run), launch_secret=secret, max_seconds=max_seconds)

    # every run's created event and ticket are in the store before the backend sees any run (so
    # `created` precedes the backend's `queued`); if one write fails nothing is submitted and every
    # run of the job gets `failed`
    workers = _store_workers(store, len(run_ids))
    try:
        shared = tickets.job_access(store, bundle, max_seconds)
        launches = _each_run(write_run, list(zip(run_ids, points)), workers)
    except BaseException as err:
        if isinstance(err, _RunError):
            error = _run_error(job_id, err)
        elif isinstance(err, Exception):
            error = err if isinstance(err, XTError) else JobError(
                f"{job_id}: writing its runs failed: {type(err).__name__}: {err}")
        else:  # Ctrl-C
            _mark_failed(store, lay, run_ids, "submit interrupted", workers)
            raise
        _mark_failed(store, lay, run_ids, f"submit failed: {error.message}", workers)
        if error is err:
            raise
        raise error from getattr(err, "cause", err)
    try:
        if launches:  # a bayesian job has none yet
            backend.submit(job_id, launches)
    except Exception as err:
        _mark_failed(store, lay, run_ids, f"submit failed: {err}", workers)
        if isinstance(err, XTError):
            raise
        raise JobError(f"{backend.name}: submitting {job_id} failed: {err}") from err
    if searching:  # the search's driver: makes bayesian runs, applies early stopping
        from . import search as adaptive
        adaptive.start(session, store, lay, record, key,
                       spec if search_used == "bayesian" else None)
    job = Job(session, record)
    from . import notify  # its own Job: the watcher thread never races the caller's refresh
    hook = cfg.get("general.notify-webhook")
    notify.watch(session, job.twin(), webhook=str(hook) if hook else None,
                 quiet=wait)  # a waiting caller sees the end already
    if wait:
        job.wait(out=out, on_output=on_output, progress=not (on_output and len(run_ids) == 1))
        if raise_errors:
            job.raise_failed()
    return job


def run_ticket(lay: Layout, job_id: str, run: str, point: dict, spec: dict) -> dict:
    """The unsigned ticket of one run from the job's ticket spec (``build``: tickets.build's
    arguments, ``fields``: xtrun.ticket_fields')."""
    return (tickets.build(lay, job_id, run, hparams=point, **spec["build"])
            | xtrun.ticket_fields(lay, run, point, **spec["fields"]))


#: Per-run store round trips (at submit each run's `created` event and ticket, then each run's

def _run_error(job_id: str, err: _RunError) -> XTError:
    """One error naming the run (the store's own error type kept: StoreError, AuthError...)."""
    cause = err.cause
    more = f" (and {err.failed - 1} more runs)" if err.failed > 1 else ""
    if isinstance(cause, XTError) and type(cause).__init__ is XTError.__init__:
        return type(cause)(f"{job_id}: writing run {err.run} failed{more}: {cause.message}",
                           hint=cause.hint, key=cause.key)
    return JobError(f"{job_id}: writing run {err.run} failed{more}: "
                    f"{type(cause).__name__}: {cause}")


def _mark_failed(store, lay: Layout, run_ids: list[str], reason: str, workers: int) -> None:
    """Append `failed` to every run (best effort: the error that got us here is the one raised)."""
    event = events.make_event(events.FAILED, reason=reason)

    def fail(run: str) -> None:
        store.append(lay.events(run), event)
    try:
        _each_run(fail, [(run,) for run in run_ids], workers)
    except (_RunError, KeyboardInterrupt):
        pass


def _job_env(cfg, extra: dict | None) -> dict:
    """general.env-vars + the env parameter, as strings; names checked; never a $vault secret."""
    env = {}
    for source, values in (("general.env-vars", cfg.get("general.env-vars") or {}),
                           (param("env"), extra or {})):
        for key, value in values.items():
            if not _ENV_NAME.match(str(key)):
                raise JobError(f"{source}: bad environment variable name {key!r}")
            if type(value).__name__ == "VaultRef":
                raise JobError(f"{source}: {key} is a $vault secret; secrets are never put in a "
                               "job's environment")
            env[str(key)] = "" if value is None else str(value)
    return env


class Preview:
    """What ``preview`` (``--dry-run``) would submit: runs, inputs, outputs, snapshot files and size."""

    def __init__(self, target, points, inputs, outputs, snap, setup, commands=None, search=None):
        self.target, self.points, self.inputs, self.outputs, self.snapshot, self.setup = (
            target, points, inputs, outputs, snap, setup)
        self.commands, self.search = commands, search

    def __repr__(self) -> str:
        lines = [f"preview: {len(self.points)} run(s) on target {self.target!r}, nothing submitted",
                 *([f"runs: {xtrun.describe(self.commands)}"] if self.commands else []),
                 f"inputs: {', '.join(self.inputs) or '-'}   outputs: {', '.join(self.outputs) or '-'}"]
        if self.setup:
            lines.append(f"setup: {self.setup['name']} pip={self.setup['pip-packages']}")
        if self.search:
            from . import search as adaptive
            lines.append(adaptive.describe(self.search))
        for i, p in enumerate(self.points[:20], 1):
            lines.append(f"  run {i}: {p}")
        if len(self.points) > 20:
            lines.append(f"  ... and {len(self.points) - 20} more runs")
        lines.append(self.snapshot.describe() if self.snapshot else "code snapshot: none")
        return "\n".join(lines)


def _notebook_source(path: str) -> str:
    """The notebook file's text, checked to be a valid nbformat v4 notebook."""
    import nbformat
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise JobError(f"--notebook {path}: no such file") from None
    except Exception as err:  # JSON or schema errors: one line naming the file
        raise JobError(f"--notebook {path}: not a valid notebook: {str(err).splitlines()[0]}"
                       ) from None
    return nbformat.writes(nb)


def _sweeping(cfg, hp, hp_config, search, runs, repeat, early_stop) -> bool:
    """Whether the job is more than one plain run (sweeps / search decide its points then)."""
    return bool(hp or hp_config or search or runs is not None or repeat is not None or early_stop
                or cfg.get("early-stopping.early-policy") not in (None, "none"))


def _check_kernel_here(path: str) -> None:
    """A local notebook job runs a kernel on this python: say so now if it cannot."""
    import importlib.util
    missing = [m for m in ("ipykernel", "nbclient") if importlib.util.find_spec(m) is None]
    if missing:
        raise JobError(f"--notebook {path}: running a notebook needs {' and '.join(missing)} "
                       f"in {sys.executable}", hint="pip install ipykernel nbclient, or use a "
                       "setup whose pip-packages include them")
