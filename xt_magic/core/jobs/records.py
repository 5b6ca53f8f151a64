"""The job record (job.json): what any kernel needs to list, monitor and fetch a job."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DamagedObject, JobError, StoreError
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

    def search_spec(self) -> dict | None:
        """The job's search plan (search.plan), None for a plain job or sweep."""
        return (self.extra or {}).get("search")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()  # keeps hparams in the order given

    @classmethod
    def from_json(cls, data: bytes, where: str = "job.json") -> "JobRecord":
        """The record, or DamagedObject naming ``where`` and what is wrong with it."""
        try:
            raw = json.loads(data)
        except ValueError as err:
            raise DamagedObject(f"{where} is damaged: not valid JSON ({_short(err)})") from None
        if not isinstance(raw, dict):
            raise DamagedObject(f"{where} is damaged: expected an object, found "
                                f"{type(raw).__name__}")
        for key, kind in _SHAPE.items():
            value = raw.get(key)
            if key in _REQUIRED or value is not None:
                if not isinstance(value, kind):
                    found = "nothing" if key not in raw else json.dumps(value)[:40]
                    raise DamagedObject(f"{where} is damaged: {key!r} should be "
                                        f"{_KIND_NAMES[kind]}, found {found}")
        for key, item in (("runs", str), ("hparams", dict)):
            bad = next((x for x in raw.get(key) or [] if not isinstance(x, item)), None)
            if bad is not None:
                raise DamagedObject(f"{where} is damaged: {key!r} holds {json.dumps(bad)[:40]}")
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known and v is not None})

    def save(self, store) -> None:
        store.write_bytes(Layout(self.workspace).job_json(self.job), self.to_json())

    @classmethod
    def load(cls, store, workspace: str, job: str) -> "JobRecord":
        path = Layout(workspace).job_json(job)
        try:
            data = store.read_bytes(path)
        except DamagedObject:
            raise
        except StoreError:
            raise JobError(f"no job {job!r} in workspace {workspace!r}",
                           hint="%xt_jobs lists the jobs") from None
        return cls.from_json(data, where=path)


_REQUIRED = ("job", "workspace", "target", "backend", "submitted", "user", "runs")
_SHAPE = {"job": str, "workspace": str, "target": str, "backend": str, "submitted": str,
          "user": str, "name": str, "runs": list, "hparams": list, "outputs": list,
          "inputs": list, "tags": dict, "experiment": str, "run_tags": dict, "extra": dict}
_KIND_NAMES = {str: "text", list: "a list", dict: "an object"}


def _short(err: ValueError) -> str:
    return str(err).split(":", 1)[0] if len(str(err)) > 80 else str(err)


def tags_match(tags: dict, wanted: dict | None) -> bool:
    """Every wanted tag is there; a wanted value of None (a bare ``--tag K``) matches any value."""
    return all(k in tags and (v is None or str(tags[k]) == str(v))
               for k, v in (wanted or {}).items())
