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

import fnmatch
import os
import re

from ..errors import JobError
from ..naming import listing, param

#: kernel variables a job gets (fnmatch patterns, case-sensitive)
ALLOWED = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE", "LC_*",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "LD_LIBRARY_PATH",
    "CUDA_*", "NVIDIA_*", "OMP_*", "MKL_*", "OPENBLAS_*", "NUMEXPR_*",
    "PYTHON*", "VIRTUAL_ENV", "CONDA_*", "XT_*",
    "SLURM_CONF",  # where Slurm's own tools (sbatch, squeue: started with this env) find the cluster
)
#: never passed, whatever the patterns above say: the launch secret of the local supervisor
DENIED = frozenset({"XT_LAUNCH", "XT_LAUNCH_FILE"})

# a word of a variable name that says it holds a secret (words split on _ - .)
_SECRET_WORD = re.compile(r"^(\w*(KEY|TOKEN)S?|SECRETS?|PASSWORDS?|PASSWD|PASSPHRASE|CREDENTIALS?|"
                          r"SAS|PAT|CONNSTR|PRIVATE)$")
# a URL with a password in it: scheme://user:password@host
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/@\s:]*:[^/@\s]+@")


def secret_reason(name: str, value: str | None = None) -> str | None:
    """Why ``name`` (with ``value``) looks like a credential; None when it does not."""
    upper = name.upper()
    if "CONNECTION_STRING" in upper:
        return "its name says it is a connection string"
    for word in re.split(r"[_\-.]+", upper):
        if _SECRET_WORD.match(word):
            return f"its name contains {word}"
    if value and _URL_PASSWORD.match(str(value).strip()):
        return "its value is a URL with a password"
    return None


def _allowed(name: str) -> bool:
    return name not in DENIED and any(fnmatch.fnmatchcase(name, p) for p in ALLOWED)


def job_environ(environ=None) -> dict:
    """The allowlisted, secret-free part of ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if _allowed(k) and secret_reason(k, v) is None}


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
