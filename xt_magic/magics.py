"""IPython magics: parse arguments, make one call into core/api.py, display the result.

``%xt_run?`` (and every other magic's ``?``) is the help, generated from @magic_arguments.
Each area keeps its magics in its own section below.
"""
from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .core import api, naming
from .core.errors import XTError
from .runner.runner import ipython_lines


def _strip_comment(line: str) -> str:
    """``%xt_config   # the config`` -> ``%xt_config``: IPython hands a line magic its comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _parse(func, line: str):
    """parse_argstring, but a usage error is an XTError (one line), never SystemExit."""
    line = _strip_comment(line)
    try:
        args = parse_argstring(func, line)
    except Exception as err:  # UsageError, or argparse's own error on bad quoting
        raise XTError(f"%{func.__name__}: {err}",
                      hint=f"see %{func.__name__}?") from None
    for name, value in vars(args).items():  # magic_arguments splits non-POSIX: quotes stay
        setattr(args, name, _unquote_all(value))
    return args


def _unquote_all(value):
    if isinstance(value, str):
        return _unquote(value)
    if isinstance(value, list):
        return [_unquote_all(v) for v in value]
    return value


def _split_assignments(words: list[str]) -> tuple[list[str], dict[str, str]]:
    plain, assigned = [], {}
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key and " " not in key:
            assigned[key] = _unquote(value)
        else:
            plain.append(word)
    return plain, assigned


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


class _Note:
    """A one-line note in a cell's output (empty until the job it waits for ends)."""

    def __init__(self, text: str = ""):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        from html import escape
        color = "#b00020" if " failed" in self.text or "cancelled" in self.text else "#070"
        return f"<span style='color:{color}'>{escape(self.text)}</span>" if self.text else ""


def job_end_announcer(shell):
    """For ``core/jobs/notify``: at submit, an empty display in the submitting cell; when the job
    ends, that display becomes the one-line note (wherever the user is now, the cell that
    submitted says how it ended). Only in a Jupyter kernel: a terminal has no cell to update."""
    if type(shell).__name__ != "ZMQInteractiveShell":
        return None

    def factory(job):
        from IPython.display import display
        handle = display(_Note(), display_id=True)
        return lambda line: handle.update(_Note(line))
    return factory


@magics_class
class XTMagics(Magics):
    """The xt_magic magics."""

    # ---- config -------------------------------------------------------------------------------
    @magic_arguments()
    @argument("items", nargs="*", help="KEY to show one value, or KEY=VALUE to set session values")
    @argument("--explain", metavar="KEY", help="show KEY's value in every layer with file:line")
    @argument("--validate", nargs="?", const="", metavar="FILE",
              help="validate FILE, or the whole resolved config")
    @argument("--create", metavar="KIND",
              help="write a commented template: a backend kind (local, pool, batch, slurm, or a "
                   "plug-in's) or azure")
    @argument("--force", action="store_true", help="with --create: overwrite an existing file")
    @argument("--save", action="store_true",
              help="write session values to ./xt_config.yaml, keeping comments")
    @argument("--reset", action="store_true", help="drop all session values")
    @argument("--form", action="store_true", help="open the config editor widget")
    @argument("--path", help="file for --create/--save and the form's Save (default "
              "./xt_config.yaml)")
    @line_magic
    def xt_config(self, line=""):
        """Show, explain, set, validate, create or save the resolved XT config."""
        args = _parse(self.xt_config, line)
        with naming.flags():
            return self._config(args)

    def _config(self, args):
        keys, assigned = _split_assignments(args.items)
        if args.form:
            _widgets("%xt_config --form")
            from .widgets.config_form import ConfigForm
            return ConfigForm(path=args.path)
        if args.reset:
            return api.config_reset()
        if args.create:
            return api.config_create(args.create, args.path, args.force)
        if args.validate is not None:
            return api.config_validate(args.validate or None)
        if args.explain:
            return api.config_explain(args.explain)
        result = None
        if assigned and keys:  # e.g. KEY="a b" split at the space: never set half a value
            raise XTError(f"%xt_config: {' '.join(keys)!r} is not KEY=VALUE",
                          hint='quote a value with spaces as "KEY=a b"')
        if assigned:
            result = api.config_set(assigned)
        if args.save:
            return api.config_save(args.path)
        if result is not None:
            return result
        if len(keys) == 1:
            return api.config_get(keys[0])
        return api.config_show(keys or None)

    # ---- jobs -------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--target", "-t", help="compute target (default: xt-services.target)")
    @argument("--setup", help="setup entry to use instead of the target's")
    @argument("--name", help="job name")
    @argument("--inputs", help="comma-separated input variables (default: the cell's free names)")
    @argument("--outputs", help="comma-separated variables to bring back")
    @argument("--hp", nargs="+", action="append", metavar="NAME=VALUES",
              help="sweep values: lr=[0.01,0.1] layers=[2,4] seed=$randint(0,9)")
    @argument("--hp-config", help="YAML file with hyperparameter-distributions:")
    @argument("--search", choices=["grid", "random", "bayesian", "dgd"],
              help="search type (default: hyperparameter-search.search-type; grid over lists, "
                   "random with --runs)")
    @argument("--runs", type=int, help="number of runs for random or bayesian search")
    @argument("--concurrent", type=int,
              help="bayesian: runs at once (default: hyperparameter-search.concurrent)")
    @argument("--metric", help="metric a search optimises (default: general.primary-metric)")
    @argument("--maximize", action="store_true", default=None,
              help="larger metric is better (default: general.maximize-metric)")
    @argument("--minimize", action="store_false", dest="maximize", help="smaller metric is better")
    @argument("--objective", choices=["last", "best"],
              help="a run's value: its last or best logged metric "
                   "(default: hyperparameter-search.objective)")
    @argument("--early-stop", choices=["none", "median", "bandit", "truncation"],
              help="early-stopping policy for sweeps (default: early-stopping.early-policy)")
    @argument("--repeat", type=int, help="repeat each sweep point N times")
    @argument("--seed", type=int, help="random seed for sweep sampling (default 0: reproducible)")
    @argument("--env", nargs="+", action="append", metavar="K=V", help="environment variables")
    @argument("--env-secret", nargs="+", action="append", metavar="NAME",
              help="let a secret-looking variable through (its --env value, else the kernel's); "
                   "the value is visible to the job")
    @argument("--code-dir", action="append", help="code directory to snapshot (repeatable)")
    @argument("--tag", nargs="+", action="append", metavar="K=V", help="tags for the job")
    @argument("--max-seconds", type=int, help="wall-clock limit per run")
    @argument("--wait", action="store_true",
              help="block, showing the runs' outputs in this cell as they come; a failed run "
                   "raises (the cell turns red)")
    @argument("--no-raise", action="store_true",
              help="with --wait: a failed run does not raise; its error is shown as text")
    @argument("--experiment", help="experiment name recorded on the job (default: "
              "general.experiment)")
    @argument("--notebook", metavar="PATH",
              help="run this .ipynb as the job (line magic): --hp values go in after its cell "
                   "tagged parameters; each run's executed notebook is kept")
    @argument("--dry-run", "--preview", action="store_true",
              help="show what would be submitted (files, sizes, runs) and submit nothing")
    @line_cell_magic
    def xt_run(self, line="", cell=None):
        """Submit the cell as a job on a compute target; returns a Job at once.

        Line forms (XT's `xt run`): ``%xt_run [OPTIONS] train.py ARGS`` runs the script from the
        code snapshot with the kernel's (or the setup's) python, each run's hyperparameters
        appended as --name=value; the sweep and run options (--hp, --hp-config, --search,
        --runs, --repeat, --target, --setup, --tag, --experiment, --max-seconds, --wait,
        --dry-run) may also follow the script, others (--seed, --name, --env, ...) go before it
        (put script arguments that share their names after ``--``). ``%xt_run [OPTIONS] -- CMD ARGS`` runs a
        command (no shell). ``%xt_run --notebook PATH [OPTIONS]`` runs a whole notebook. A bare
        ``%xt_run [OPTIONS]`` runs the config's ``commands``.
        """
        script = command = None
        if cell is None:
            xt_words, script, script_args, command = _split_run_line(self.xt_run.parser,
                                                                     _shell_words(_strip_comment(line)))
            args = _parse(self.xt_run, _join(xt_words))
        else:
            args = _parse(self.xt_run, line)
        if args.notebook and (cell is not None or script or command):
            raise XTError("%xt_run --notebook runs the notebook: no cell, script or command "
                          "with it", hint="%xt_run --notebook PATH [OPTIONS]")

        def flat(groups):
            return [w for group in (groups or []) for w in group]

        with naming.flags():  # errors name --flags, not the API's parameters
            from .core.jobs.sweeps import parse_hp_args
            hp = parse_hp_args(flat(args.hp)) if args.hp else None
            options = dict(
                target=args.target, setup=args.setup, name=args.name, hp=hp,
                hp_config=args.hp_config, search=args.search, runs=args.runs,
                repeat=args.repeat, env=_kv(flat(args.env), "--env"), code_dir=args.code_dir,
                tags=_kv(flat(args.tag), "--tag"), max_seconds=args.max_seconds, seed=args.seed,
                env_secret=flat(args.env_secret), experiment=args.experiment,
                concurrent=args.concurrent, metric=args.metric, maximize=args.maximize,
                objective=args.objective, early_stop=args.early_stop,
            )
            live = {}
            if args.wait and (cell is not None or args.notebook):
                # the runs' outputs in this cell as they come; a failed run raises
                from .widgets.cell_outputs import LiveOutputs
                live = dict(on_output=LiveOutputs(raise_errors=not args.no_raise),
                            raise_errors=not args.no_raise)
            if args.notebook:
                if args.inputs or args.outputs:
                    raise XTError("--inputs/--outputs name cell variables: a notebook job has "
                                  "none", hint="write files under $XT_OUTPUT_DIR instead")
                job = api.submit_notebook(args.notebook, wait=args.wait, dry_run=args.dry_run,
                                          **live, **options)
                return job.results() if args.wait and not args.dry_run else job
            if cell is None:
                if args.inputs or args.outputs:
                    raise XTError("--inputs/--outputs name cell variables: use %%xt_run with a cell",
                                  hint="a script writes files under $XT_OUTPUT_DIR instead")
                options.update(wait=args.wait, dry_run=args.dry_run)
                job = (api.submit_script(script, script_args, **options) if script
                       else api.run_command(command, **options))
                return job.results() if args.wait and not args.dry_run else job
            options.update(inputs=_csv(args.inputs), outputs=_csv(args.outputs))
            if ipython_lines(cell):
                # !cmd / %magic lines run in IPython on the node; inputs: in what it compiles
                options["python_source"] = self.shell.transform_cell(cell)
            if args.dry_run:
                return api.preview(cell, self.shell.user_ns, **options)
            job = api.run_cell(cell, self.shell.user_ns, wait=args.wait, **live, **options)
            if args.wait:
                # the user declared --outputs and chose to wait: the values belong in the notebook
                return job.results(into=self.shell.user_ns if options["outputs"] else None)
            return job

    @magic_arguments()
    @argument("--status", help="only jobs with a run in this state")
    @argument("--last", type=int, help="only the last N jobs")
    @argument("--experiment", help="only jobs of this experiment")
    @argument("--tag", nargs="+", action="append", metavar="K=V", help="only jobs with these tags")
    @line_magic
    def xt_jobs(self, line=""):
        """List jobs with their experiment and tags (a DataFrame when pandas is installed)."""
        args = _parse(self.xt_jobs, line)
        with naming.flags():
            return api.jobs(status=args.status, last=args.last, experiment=args.experiment,
                            tags=_tags(_flat(args.tag), "--tag"))

    @magic_arguments()
    @argument("--job", help="only the runs of this job (or one run id)")
    @argument("--status", help="only runs in this state")
    @argument("--experiment", help="only runs of this experiment")
    @argument("--tag", nargs="+", action="append", metavar="K=V", help="only runs with these tags")
    @argument("--sort", metavar="METRIC", help="sort by this column, best first "
              "(general.maximize-metric)")
    @argument("--reverse", action="store_true", help="with --sort: the other way round")
    @argument("--top", type=int, help="only the first N runs (after sorting)")
    @line_magic
    def xt_runs(self, line=""):
        """Runs across jobs with hyperparameters and last/best metrics (XT's `xt list runs`)."""
        args = _parse(self.xt_runs, line)
        return api.runs(job=args.job, status=args.status, experiment=args.experiment,
                        tags=_tags(_flat(args.tag), "--tag"), sort=args.sort, top=args.top,
                        reverse=args.reverse)

    @magic_arguments()
    @argument("id", help="job or run id")
    @argument("--hp", nargs="+", action="append", metavar="NAME=VALUES",
              help="new hyperparameters (default: the same as before)")
    @argument("--target", "-t", help="compute target (default: the job's)")
    @argument("--resume", action="store_true",
              help="start from the run's last checkpoint (is_resuming() is true)")
    @argument("--wait", action="store_true", help="block with live progress")
    @line_magic
    def xt_rerun(self, line=""):
        """Run a job's (or one run's) cell or script again as a new job: same inputs, code
        snapshot and setup."""
        args = _parse(self.xt_rerun, line)
        with naming.flags():
            from .core.jobs.sweeps import parse_hp_args
            hp = parse_hp_args(_flat(args.hp)) if args.hp else None
            job = api.rerun(args.id, hp=hp, target=args.target, resume=args.resume,
                            wait=args.wait)
            return job.results() if args.wait else job

    @magic_arguments()
    @argument("id", help="job or run id")
    @argument("tags", nargs="+", metavar="K=V", help="tags to add (a bare K: a tag without value)")
    @line_magic
    def xt_tag(self, line=""):
        """Tag a job or a run after submit (shown and filterable in %xt_jobs and %xt_runs)."""
        args = _parse(self.xt_tag, line)
        return api.tag(args.id, _tags(args.tags, "%xt_tag"))

    @magic_arguments()
    @argument("id", help="job or run id")
    @line_magic
    def xt_status(self, line=""):
        """Show a job's runs and their states (or one run's)."""
        args = _parse(self.xt_status, line)
        return api.status(args.id)

    @magic_arguments()
    @argument("run", help="run id (or a job id for its first run)")
    @argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    @line_magic
    def xt_logs(self, line=""):
        """Print a run's console output."""
        args = _parse(self.xt_logs, line)
        return api.logs(args.run, follow=args.follow)

    @magic_arguments()
    @argument("id", nargs="?", help="job or run id")
    @argument("--all", action="store_true", help="cancel every live job")
    @argument("--target", "-t", help="with --all: only jobs on this target")
    @line_magic
    def xt_cancel(self, line=""):
        """Cancel a job (all its runs) or one run; --all: every live job."""
        args = _parse(self.xt_cancel, line)
        if args.all:
            if args.id:
                raise XTError("%xt_cancel: give a job id or --all, not both")
            return api.cancel_all(target=args.target)
        if not args.id:
            raise XTError("%xt_cancel needs a job or run id", hint="or --all")
        return api.cancel(args.id)

    @magic_arguments()
    @argument("job", help="job id")
    @argument("--into-namespace", action="store_true",
              help="put output variables into the notebook namespace")
    @argument("--raise", dest="raise_errors", action="store_true",
              help="re-raise a failed run's exception with its remote traceback")
    @argument("--notebooks", metavar="DIR",
              help="save each run's executed cell as DIR/RUN.ipynb (with its outputs)")
    @argument("--no-outputs", action="store_true", help="do not show the runs' cell outputs")
    @line_magic
    def xt_results(self, line=""):
        """Fetch a job's results: cell outputs (shown), output variables, files, exceptions."""
        args = _parse(self.xt_results, line)
        into = self.shell.user_ns if args.into_namespace else None
        with naming.flags():
            res = api.results(args.job, into=into, raise_errors=args.raise_errors)
        if not args.no_outputs:
            from IPython.display import display
            display(api.show(args.job))
        if args.notebooks:
            saved = api.save_notebooks(args.job, args.notebooks)
            print(f"saved {len(saved)} run notebook(s) under {args.notebooks}")
        return res

    @magic_arguments()
    @argument("job", help="job id")
    @line_magic
    def xt_metrics(self, line=""):
        """A job's logged metrics as a DataFrame (one row per record)."""
        args = _parse(self.xt_metrics, line)
        return api.metrics(args.job)

    @magic_arguments()
    @argument("job", help="job id")
    @argument("metric", help="metric name")
    @argument("--step", help="x-axis column (default: general.step-name)")
    @line_magic
    def xt_plot(self, line=""):
        """Plot METRIC against step, one line per run (matplotlib)."""
        args = _parse(self.xt_plot, line)
        return api.plot(args.job, args.metric, step=args.step)

    @magic_arguments()
    @argument("job", help="job id")
    @argument("metric", nargs="?", help="metric to rank runs by (default: general.primary-metric "
              "when logged, else the first logged)")
    @line_magic
    def xt_compare(self, line=""):
        """Hyperparameters against a metric: parallel-coordinates plot and the runs sorted best
        first, with pickers for the metric and the colour scale (XT's hyperparameter explorer)."""
        args = _parse(self.xt_compare, line)
        try:
            import ipywidgets  # noqa: F401
            import matplotlib  # noqa: F401
        except ImportError:  # no widgets or no plot: the sorted table still says it
            return api.compare(args.job, args.metric)
        from .widgets.compare import CompareView
        return CompareView(args.job, args.metric)

    @magic_arguments()
    @argument("job", nargs="?", help="job id (default: the last job)")
    @line_magic
    def xt_monitor(self, line=""):
        """Live job monitor widget: runs, states, metrics, log tail, cancel."""
        args = _parse(self.xt_monitor, line)
        _widgets("%xt_monitor")
        from .widgets.monitor import JobMonitor
        return JobMonitor(args.job)

    # ---- auth ---------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--method", help="auto, browser, device-code, cli, service-principal, managed-identity")
    @argument("--tenant", help="Azure AD tenant id (default: general.azure-tenant-id)")
    @argument("--form", action="store_true", help="open the login panel widget")
    @argument("--status", action="store_true", help="only show who is logged in")
    @line_magic
    def xt_login(self, line=""):
        """Log in to Azure for this kernel session and load the team's vault secrets."""
        args = _parse(self.xt_login, line)
        if args.status:
            return api.whoami()
        if args.form:
            _widgets("%xt_login --form")
            from .widgets.login_panel import LoginPanel
            return LoginPanel()
        with naming.flags():
            return api.login(method=args.method, tenant=args.tenant)

    @line_magic
    def xt_logout(self, line=""):
        """Forget the credential, tokens and secrets cached in this kernel session."""
        return api.logout()

    @magic_arguments()
    @argument("name", help="team name (prefix of the Azure resource names)")
    @argument("--location", help="Azure region, e.g. westus2")
    @argument("--with", dest="with_", action="append", default=[], help="extra services: batch")
    @argument("--path", help="where to write the ARM template (default ./NAME-template.json)")
    @line_magic
    def xt_create_team(self, line=""):
        """Write an ARM template for a team's Azure services and print the config entries."""
        args = _parse(self.xt_create_team, line)
        return api.create_team(args.name, location=args.location,
                               with_batch="batch" in args.with_, path=args.path)

    # ---- compute listings ---------------------------------------------------------------------------
    @magic_arguments()
    @argument("--trust", metavar="BOX", help="show BOX's host key fingerprint and record it")
    @line_magic
    def xt_boxes(self, line=""):
        """List boxes: reachability, cores, GPUs, running runs."""
        args = _parse(self.xt_boxes, line)
        return api.boxes(trust=args.trust)

    @magic_arguments()
    @argument("--target", help="batch compute target (default: all batch targets)")
    @line_magic
    def xt_pools(self, line=""):
        """List Azure Batch pools with node counts and states."""
        args = _parse(self.xt_pools, line)
        return api.pools(target=args.target)


def _widgets(feature: str) -> None:
    from .core.errors import require
    require("ipywidgets", "ipywidgets", "widgets", feature)


def _tags(words: list[str], flag: str) -> dict:
    """Tags as XT wrote them: ``K=V``, or a bare ``K`` (a tag without a value: None)."""
    out = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not key:
            raise XTError(f"{flag} {word!r}: expected K=V or K")
        out[key] = _unquote(value) if eq else None
    return out


def _flat(groups) -> list[str]:
    return [w for group in (groups or []) for w in group]


def _shell_words(line: str) -> list[str]:
    import shlex
    try:
        return shlex.split(line)
    except ValueError as err:
        raise XTError(f"%xt_run: {err}", hint="check the quotes") from None


def _join(words: list[str]) -> str:
    import shlex
    return " ".join(w if w and all(c not in w for c in " '\"\\") else shlex.quote(w)
                    for w in words)


#: %xt_run options still taken after the script (``%xt_run train.py --hp-config s.yaml --runs 3``);
#: others (--seed, --name, --env, ...) are common script options there, so they go before it.
AFTER_SCRIPT = frozenset({"--hp", "--hp-config", "--search", "--runs", "--repeat", "--target",
                          "--setup", "--tag", "--experiment", "--max-seconds", "--wait",
                          "--no-raise", "--dry-run", "--preview"})


def _split_run_line(parser, words: list[str]):
    """%xt_run's words -> (its own option words, script, script args, command argv).

    Options come first; ``--`` starts a command; the first other word is the script. After the
    script, words naming an ``AFTER_SCRIPT`` option (``--runs 3``, ``--hp-config=f``) are
    %xt_run's, everything else (and everything after a later ``--``) is the script's."""
    takes = {}
    for action in parser._actions:
        for opt in action.option_strings:
            takes[opt] = action.nargs if action.nargs is not None else 1
    xt: list[str] = []

    def take(i: int) -> int:
        word = words[i]
        xt.append(word)
        n, i = takes[word.split("=", 1)[0]], i + 1
        if "=" in word:
            return i
        if n in ("+", "*"):
            while i < len(words) and not words[i].startswith("-"):
                xt.append(words[i])
                i += 1
            return i
        for _ in range(n if isinstance(n, int) else 1 if n == "?" else 0):
            if i < len(words) and (n != "?" or not words[i].startswith("-")):
                xt.append(words[i])
                i += 1
        return i

    i = 0
    while i < len(words) and words[i] != "--" and words[i].startswith("-"):
        if words[i].split("=", 1)[0] not in takes:
            raise XTError(f"%xt_run: unknown option {words[i]!r}",
                          hint="script arguments go after the script; a command after --")
        i = take(i)
    if i < len(words) and words[i] == "--":
        if i + 1 == len(words):
            raise XTError("%xt_run --: no command after --")
        return xt, None, [], words[i + 1:]
    if i == len(words):
        return xt, None, [], None
    script, args, i = words[i], [], i + 1
    while i < len(words):
        word = words[i]
        if word == "--":
            args += words[i + 1:]
            break
        if word.split("=", 1)[0] in AFTER_SCRIPT:
            i = take(i)
            continue
        args.append(word)
        i += 1
    return xt, script, args, None


def _csv(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [w.strip() for w in text.split(",") if w.strip()]


def _kv(words: list[str], flag: str) -> dict[str, str]:
    out = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise XTError(f"{flag} {word!r}: expected KEY=VALUE")
        out[key] = _unquote(value)
    return out


__all__ = ["XTMagics"]
