"""The environment of processes that run jobs: an allowlist of the kernel's variables, never a
credential.

A kernel's environment holds whatever the user's shell had: service principal secrets, storage
keys, ``GITHUB_TOKEN``, ``HF_TOKEN``, a ``DATABASE_URL`` with a password. Jobs get only what they
need to run (:func:`job_environ`): locale, paths, proxies, CUDA/threading knobs, non-secret
``PYTHON*``, ``VIRTUAL_ENV``/``CONDA_*`` and ``XT_*`` -- and even of those, no name or value that
looks like a secret. Backends that start processes from the kernel's environment (local, Slurm's
``sbatch``) pass :func:`job_environ` instead of ``os.environ``.

What ``general.env-vars`` and ``--env`` name explicitly is added by the runner; a secret-looking
name or value there is refused (:func:`explicit_env`) unless the user marks the name with
``--env-secret NAME`` (the value is then visible to the job and stored in the run's ticket).
"""
from __future__ import annotations

import os

# one allowlist and one secret test for the kernel and the runner (stdlib, on every node)
from ...runner.runner import ENV_ALLOWED as ALLOWED  # noqa: F401 - re-exported
from ...runner.runner import ENV_DENIED as DENIED  # noqa: F401
from ...runner.runner import allowed_environ, secret_reason
from ..errors import JobError
from ..naming import listing, param


def job_environ(environ=None) -> dict:
    """The allowlisted, secret-free part of ``environ`` (default ``os.environ``)."""
    return allowed_environ(os.environ if environ is None else environ)


def explicit_env(env: dict, secret_names=None, from_flag=None, environ=None) -> dict:
    """``env`` (general.env-vars + --env, merged) checked for secrets.

    A secret-looking name or value is refused unless its name is in ``secret_names``
    (``--env-secret``); a marked name given no value takes the kernel's (``environ``). Every
    refusal is reported in one line; ``from_flag`` (the --env dict) says which source to name.
    """
    environ = os.environ if environ is None else environ
    marked = [str(n).strip() for n in (secret_names or [])]
    out, refused = dict(env), []
    for name in marked:
        if name not in out:
            if name not in environ:
                raise JobError(f"{param('env_secret')} {name}: not given by {param('env')} or "
                               "general.env-vars and not set in the kernel's environment")
            out[name] = environ[name]
    for name, value in env.items():
        reason = None if name in marked else secret_reason(name, value)
        if reason:
            source = param("env") if name in (from_flag or {}) else "general.env-vars"
            refused.append(f"{source} {name}: {reason}")
    if refused:
        names = [r.split()[1].rstrip(":") for r in refused]
        raise JobError("refusing to put a secret-looking variable in a job's environment: "
                       + "; ".join(refused),
                       hint=f"if the job needs it, add {listing('env_secret', names)} "
                            "(its value is then visible to the job)")
    return out
