"""Atomic job ids: ``job{N}``, allocated by creating ``{ws}/ids/job{N}`` exclusively.

Two kernels (or processes, or machines sharing a store) submitting at once never get the same id:
whoever creates the marker first owns the number; the loser moves on to the next one.
"""
from __future__ import annotations

import re

from ..errors import StoreError
from ..protocol.layout import Layout

# bounded: a number of thousands of digits is no id (and int() refuses over 4,300 digits)
_JOB = re.compile(r"^job(\d{1,30})$")
_RUN = re.compile(r"^run(\d{1,30})\.(\d{1,30})$")


def job_number(job_id: str) -> int | None:
    m = _JOB.match(job_id)
    return int(m.group(1)) if m else None


def run_id(job_id: str, index: int) -> str:
    """``run{N}.{i}`` for run ``i`` (from 1) of ``job{N}``."""
    return f"run{job_number(job_id)}.{index}"


def job_of_run(run: str) -> str | None:
    m = _RUN.match(run)
    return f"job{m.group(1)}" if m else None


def existing_numbers(store, workspace: str) -> list[int]:
    nums = []
    for path in store.list(Layout(workspace).ids_dir()):
        n = job_number(path.rsplit("/", 1)[-1])
        if n is not None:
            nums.append(n)
    return nums


def allocate_job_id(store, workspace: str, attempts: int = 10_000) -> str:
    """Claim the next free ``job{N}`` in ``workspace``."""
    n = max(existing_numbers(store, workspace), default=0) + 1
    for _ in range(attempts):
        if store.create_exclusive(Layout(workspace).id_marker(f"job{n}"), b""):
            return f"job{n}"
        n += 1
    raise StoreError(f"could not allocate a job id in workspace {workspace!r}")
