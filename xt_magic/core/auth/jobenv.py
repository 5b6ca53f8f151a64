"""The kernel's environment minus credentials, for processes that run jobs.

A kernel may hold a service principal secret or a storage key in its environment (for
``%xt_login --method service-principal`` or other tools). Jobs must never inherit them: backends that
start processes from the kernel's environment (local, Slurm's default ``--export=ALL``) pass
:func:`job_environ` instead of ``os.environ``.
"""
from __future__ import annotations

import os
import re

CREDENTIAL_VARS = frozenset({
    "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD",
    "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN", "AZURE_BATCH_ACCESS_KEY", "IDENTITY_HEADER", "MSI_SECRET",
    "AZURE_DEVOPS_EXT_PAT", "AZURE_ACCESS_TOKEN",
})
# anything else that plainly names a secret
_SECRETISH = re.compile(r"(^|_)(SECRET|PASSWORD|ACCOUNT_KEY|CONNECTION_STRING|SAS_TOKEN)(_|$)")


def job_environ(environ=None) -> dict:
    """A copy of ``environ`` (default ``os.environ``) without credential variables."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if k not in CREDENTIAL_VARS and not _SECRETISH.search(k.upper())}
