"""Scripts and commands as jobs (XT's `xt run`): ``%xt_run train.py ARGS``, ``%xt_run -- CMD``
and a bare ``%xt_run`` (the config's ``commands``). They run from the code snapshot in the run's
work dir, in their own process group, with each run's hyperparameters appended as
``--name=value`` (``hyperparameter-search.option-prefix``). Console, metrics, outputs, exit code and
state are recorded as for cells (runner.py ``run_commands``)."""
from __future__ import annotations

import os

from ..errors import JobError
from . import submit, xtrun


def submit_script(session, script: str, args: list[str] | None = None, **options):
    """Run ``python SCRIPT ARGS`` (the kernel's python, or the setup's) as a job; returns a Job."""
    if not script:
        raise JobError("submit_script needs a script path")
    cwd = session.cwd or os.getcwd()
    words = _take_inline_sweeps(session, args or [], options)

    def build(code_dirs, files):
        return [xtrun.script_command(script, words, cwd, code_dirs, files)]
    options["name"] = options.get("name") or os.path.basename(script)
    return submit.run_cell(session, "", {}, commands=build, **options)


def _take_inline_sweeps(session, args, options: dict) -> list[str]:
    """The words left after moving XT's inline sweeps into ``options["hp"]``."""
    prefix = xtrun.option_prefix(session.config())
    if prefix is None:  # XT: option-prefix null turns option parsing and generation off
        return [str(a) for a in args]
    words, inline = inline_sweeps([str(a) for a in args], prefix)
    if inline:  # XT's inline sweeps, then --hp (which wins, as over a file)
        from .sweeps import parse_hp_args
        options["hp"] = {**parse_hp_args(inline), **(options.get("hp") or {})}
    return words


def inline_sweeps(args: list[str], prefix: str) -> tuple[list[str], list[str]]:
    """XT's inline sweeps among a script's options: ``--lr=[.01,.03]``, ``--seed=$randint()``
    become sweep specs (each run then gets its own ``--lr=VALUE``); other words stay."""
    kept, specs = [], []
    for word in args:
        name, eq, value = word[len(prefix):].partition("=") if word.startswith(prefix) else ("", "", "")
        value = value.strip()
        if name and eq and (value.startswith("[") and value.endswith("]")
                            or value.startswith("$") and value.endswith(")")):
            specs.append(f"{name}={value}")
        else:
            kept.append(word)
    return kept, specs


def submit_command(session, argv: list[str] | None = None, **options):
    """Run a command (an argv list, never through a shell) as a job; with no argv the config's
    ``commands`` list, in order, stopping at the first that fails (XT's bare `xt run`)."""
    if argv:
        commands = [xtrun.command([str(argv[0]), *_take_inline_sweeps(session, argv[1:], options)])]
    elif options.get("dry_run") and not session.config().get("commands"):
        return submit.run_cell(session, "", {}, **options)  # `%xt_run --preview`: the snapshot
    else:
        commands = xtrun.config_commands(session.config())
    first = commands[0]["argv"]
    options["name"] = options.get("name") or (os.path.basename(first[0]) if first else None)
    return submit.run_cell(session, "", {}, commands=commands, **options)
