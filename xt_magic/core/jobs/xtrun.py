"""What a run gets from the config keys XT honoured (docs/xt-users.md): sweep defaults
(``hyperparameter-search``), the experiment, ``after-files``, ``data``/``model`` downloads,
checkpoint paths, and the command lines of script and command jobs."""
from __future__ import annotations

import os
import shlex

from ..errors import JobError

SHARES = (("data", "data-action", "data-share-path", "data-omit"),
          ("model", "model-action", "model-share-path", None))
#: Checkpoint objects of a run (store: ``{ws}/runs/{run}/checkpoints/NAME``, XT's names; the
#: runner's ``_xt_spool.CHECKPOINT_NAMES``): XT's dict, XT's file, and xt_magic.checkpoint(obj).
CHECKPOINT_NAMES = ("dict_cp.json", "file.dat", "native.pkl")
MAX_SHARE_FILES = 10000


def sweep_defaults(cfg, hp, hp_config, search, runs):
    """``hyperparameter-search`` hp-config, search-type and max-runs when no sweep option is given
    (XT's `xt run` did the same)."""
    if hp or hp_config or search or runs:
        return hp, hp_config, search, runs
    path = cfg.get("hyperparameter-search.hp-config") or None
    if not path:
        return hp, hp_config, search, runs
    kind = cfg.get("hyperparameter-search.search-type") or None
    limit = cfg.get("hyperparameter-search.max-runs")
    if kind == "random" and not limit:
        kind = None  # XT's default search-type with no max-runs: grid over lists, as %%xt_run does
    return hp, str(path), kind, int(limit) if limit else None


def experiment(cfg, given: str | None) -> str | None:
    value = given or cfg.get("general.experiment")
    return str(value) if value not in (None, "") else None


def after_spec(cfg) -> dict | None:
    """after-files: the run's globs (relative to its work dir) brought back with the outputs;
    the output dir itself always comes back."""
    if cfg.get("after-files.after-upload") is False:
        return None
    dirs = [str(d) for d in cfg.get("after-files.after-dirs") or []
            if str(d).rstrip("/*") not in ("output", "./output")]
    if not dirs:
        return None
    return {"dirs": dirs, "omit": [str(o) for o in cfg.get("after-files.after-omit") or []]}


def share_specs(cfg, store, notes: list) -> dict:
    """Ticket ``data``/``model`` for ``*-action: download`` (``mount`` falls back to it, noted):
    {key: {"dir", "files": {relative name: store path}}} (tickets.node_access grants the reads)."""
    specs = {}
    for key, action_key, path_key, omit_key in SHARES:
        action = cfg.get(f"{key}.{action_key}") or "none"
        if action == "none":
            continue
        share = str(cfg.get(f"{key}.{path_key}") or "").strip("/")
        if not share:
            raise JobError(f"{key}.{action_key} is {action} but {key}.{path_key} is empty",
                           key=f"{key}.{path_key}", hint="name the folder in the store")
        if action == "mount":
            notes.append(f"{key}.{action_key}: mount is not supported; the files are downloaded")
        omit = [str(o) for o in (cfg.get(f"{key}.{omit_key}") or [])] if omit_key else []
        files = {}
        import fnmatch
        for path in store.list(share):
            rel = path[len(share) + 1:] if path.startswith(share + "/") else None
            if not rel or any(fnmatch.fnmatch(rel, o) or fnmatch.fnmatch(rel.split("/")[-1], o)
                              for o in omit):
                continue
            files[rel] = path
        if not files:  # XT's samples then fetch the data themselves into $XT_DATA_DIR
            notes.append(f"{key}.{path_key} {share!r}: no files in the store there; the run gets "
                         f"an empty XT_{key.upper()}_DIR")
        if len(files) > MAX_SHARE_FILES:
            raise JobError(f"{key}.{path_key} {share!r}: {len(files)} files, over the "
                           f"{MAX_SHARE_FILES} a run downloads", key=f"{key}.{path_key}")
        specs[key] = {"dir": f"xt-{key}", "files": files}
    return specs


def checkpoint_paths(lay, run: str, resume_run: str | None, resume_sha: dict | None = None) -> dict:
    """Where the run keeps its checkpoint (write) and where it looks for one at start (read: its
    own after a requeue, ``resume_run``'s for ``%xt_rerun --resume``, whose data must have the
    ``resume_sha`` sha256s)."""
    own = {name: lay.checkpoint(run, name) for name in CHECKPOINT_NAMES}
    if not resume_run:
        return {"write": own, "read": own}
    return {"write": own, "read": {name: lay.checkpoint(resume_run, name) for name in resume_sha},
            "sha256": dict(resume_sha)}


def resume_checkpoints(store, lay, resume_run: str) -> dict:
    """{name: sha256 of the data} of ``resume_run``'s checkpoints that carry a valid signature of
    its job's key (runner.pack_checkpoint); the new run accepts exactly that data."""
    from ...runner.runner import _sha256, unpack_checkpoint, verify_fields
    from ..protocol import keys
    from . import ids
    key = keys.job_key(store, lay.ws, ids.job_of_run(resume_run))
    out = {}
    for name in CHECKPOINT_NAMES:
        path = lay.checkpoint(resume_run, name)
        blob = store.read_bytes(path) if store.exists(path) else b""
        unpacked = unpack_checkpoint(blob) if blob else None
        if unpacked is None:
            if blob:
                raise JobError(f"{resume_run}: {path} is not a checkpoint its run wrote; not resumed")
            continue
        sig, data = unpacked
        fields = {"run": resume_run, "name": name, "sha256": _sha256(data), "sig": sig}
        if not verify_fields(key, fields):
            raise JobError(f"{resume_run}: checkpoint {name} does not verify; not resumed")
        out[name] = fields["sha256"]
    if not out:
        raise JobError(f"{resume_run} has no checkpoint to resume from",
                       hint="a run keeps one with Run().set_checkpoint(...) or "
                            "xt_magic.checkpoint(obj)")
    return out


def ticket_fields(lay, run: str, point: dict, *, experiment, resume, resume_sha, after, shares,
                  commands, prefix) -> dict:
    """The ticket fields of XT's run features (runner.py: RunSpool, xt_environ, fetch_shares,
    after_files, run_commands); tickets.node_access grants the store paths they name."""
    fields = {"experiment": experiment,
              "checkpoint": checkpoint_paths(lay, run, resume, resume_sha),
              "resume": resume,
              "after": after, **shares}
    if commands is not None:
        fields["kind"] = "command"
        fields["commands"] = run_commands(commands, point, prefix)
    return fields


def option_prefix(cfg) -> str | None:
    """``hyperparameter-search.option-prefix``; None (XT: ``null``) turns hp options off. A null in
    a config file unsets the key (defaults.yaml has ``--``): a section without it means null."""
    section = cfg.get("hyperparameter-search")
    prefix = section.get("option-prefix") if isinstance(section, dict) else "--"
    return None if prefix is None or str(prefix).strip() in ("", "null") else str(prefix)


def hp_options(point: dict, prefix: str | None) -> list[str]:
    """A run's hyperparameters as XT passed them to scripts: ``--name=value`` (names as given);
    none when the prefix is off."""
    if prefix is None:
        return []
    out = []
    for name, value in point.items():
        text = "true" if value is True else "false" if value is False else str(value)
        out.append(f"{prefix}{name}={text}")
    return out


def run_commands(commands: list[dict], point: dict, prefix: str | None) -> list[dict]:
    """The ticket's commands for one run: each argv with the run's hyperparameters appended."""
    extra = hp_options(point, prefix)
    return [{"argv": list(c["argv"]) + extra, "python": bool(c.get("python"))} for c in commands]


def script_command(script: str, args: list[str], cwd: str, code_dirs, snap_files) -> dict:
    """``python SCRIPT ARGS`` (``bash`` for a .sh) for a script in the code snapshot (its path
    inside the snapshot)."""
    from .snapshot import _dir_of
    full = os.path.abspath(os.path.join(cwd, os.path.expanduser(script)))
    if not os.path.isfile(full):
        raise JobError(f"script {script!r} not found ({full})")
    names = {name for name, _ in snap_files or []}
    for entry in code_dirs or []:
        root, _ = _dir_of(str(entry), cwd)
        rel = os.path.relpath(full, root).replace(os.sep, "/")
        if not rel.startswith("../") and rel in names:
            if rel.endswith(".sh"):  # a shell script, as XT ran it
                return {"argv": ["bash", rel, *args], "python": False}
            return {"argv": [rel, *args], "python": True}
    raise JobError(f"script {script!r} is not in the code snapshot", key="code.code-dirs",
                   hint="runs start from the snapshot of code.code-dirs: put the script under one "
                        "(and not in code-omit or .gitignore)")


def config_commands(cfg) -> list[dict]:
    """XT's ``commands`` list (what a bare `xt run` ran): each string split as a shell would,
    run without a shell."""
    raw = cfg.get("commands") or []
    if isinstance(raw, str):
        raw = [raw]
    out = []
    for i, text in enumerate(raw):
        try:
            argv = shlex.split(str(text))
        except ValueError as err:
            raise JobError(f"commands[{i}] {text!r}: {err}", key="commands") from None
        if argv:
            out.append(command(argv))
    if not out:
        raise JobError("%xt_run with no cell, script or command: the config has no `commands`",
                       key="commands", hint="%%xt_run runs a cell, %xt_run train.py a script, "
                       "%xt_run -- CMD a command")
    return out


def command(argv: list[str]) -> dict:
    """A command: ``python``/``python3`` means the run's python (the kernel's or the setup's)."""
    argv = [str(a) for a in argv]
    if argv and argv[0] in ("python", "python3"):
        return {"argv": argv[1:], "python": True}
    return {"argv": argv, "python": False}


def describe(commands: list[dict]) -> str:
    return "; ".join(("python " if c.get("python") else "") + shlex.join(c["argv"])
                     for c in commands)
