"""The job record (job.json): what any kernel needs to list, monitor and fetch a job."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import JobError, StoreError
from ..protocol.layout import Layout


@dataclass
class JobRecord:
    """What ``job.json`` holds: enough for any kernel to list, monitor and fetch the job."""

    job: str
    workspace: str
    target: str
    backend: str
    submitted: str
    user: str
    name: str | None = None
    runs: list[str] = field(default_factory=list)
    hparams: list[dict] = field(default_factory=list)   # per run, same order as runs
    outputs: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    search: str | None = None
    setup: str | None = None
    snapshot: str | None = None
    tags: dict = field(default_factory=dict)
    python: str = ""
    experiment: str | None = None                      # general.experiment / --experiment
    run_tags: dict = field(default_factory=dict)        # run -> tags (%xt_tag RUN K=V)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()  # keeps hparams in the order given

    @classmethod
    def from_json(cls, data: bytes) -> "JobRecord":
        raw = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self, store) -> None:
        store.write_bytes(Layout(self.workspace).job_json(self.job), self.to_json())

    @classmethod
    def load(cls, store, workspace: str, job: str) -> "JobRecord":
        try:
            return cls.from_json(store.read_bytes(Layout(workspace).job_json(job)))
        except StoreError:
            raise JobError(f"no job {job!r} in workspace {workspace!r}",
                           hint="%xt_jobs lists the jobs") from None


def tags_match(tags: dict, wanted: dict | None) -> bool:
    """Every wanted tag is there; a wanted value of None (a bare ``--tag K``) matches any value."""
    return all(k in tags and (v is None or str(tags[k]) == str(v))
               for k, v in (wanted or {}).items())
