"""Per-job keys: HMAC-SHA256(master, store identity, workspace, job).

The master key is 32 random bytes in ``$XT_HOME/keys/master.key`` (file 0600, directory 0700),
made once per user and machine and never written to a store. Any kernel of the same user on this
machine derives the same job key later (results after a restart); another user, or anyone who
can only read or write the store, cannot.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from ..errors import JobError
from ..paths import keys_dir

MASTER = "master.key"


def master_path() -> str:
    return os.path.join(keys_dir(), MASTER)


def master_key(create: bool = False) -> bytes | None:
    """The master key; made on first use when ``create`` (an exclusive create: two kernels
    starting at once agree on one key)."""
    path = master_path()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    if not create:
        return None
    os.makedirs(keys_dir(), mode=0o700, exist_ok=True)
    os.chmod(keys_dir(), 0o700)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process made it first: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, "rb") as fh:
        return fh.read()


def job_key(store, workspace: str, job: str, create: bool = False) -> bytes:
    """The job's key; ``create`` at submit. Without the master key: a one-line JobError."""
    master = master_key(create=create)
    if master is None:
        raise JobError(f"{job}: this job's key is not on this machine (no {master_path()}); "
                       "its results cannot be verified, so nothing is loaded",
                       hint="fetch results on the machine and account that submitted the job")
    return hmac.new(master, f"{store.identity()}\0{workspace}\0{job}".encode(),
                    hashlib.sha256).digest()
