"""A damaged store object (job.json, events.jsonl) is one job's problem, never everyone's: listings
show it as a row with a ``problem``, verbs answer one line naming the object, the monitor stops."""
from __future__ import annotations

import json
import os

import pytest

from xt_magic.core import api, registry
from xt_magic.core.errors import XTError


@pytest.fixture
def sync_local(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "local", ("jobs_support:SyncBackend", ""))


def _ws(xt_home):
    return xt_home / "file_store" / "ws1"


DAMAGE = {
    "job1": ("job.json", lambda p: p.write_text("[]")),
    "job2": ("job.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "runs": None}))),
    "job3": ("job.json", lambda p: p.write_text(p.read_text()[:40])),
    "job4": ("job.json", lambda p: (p.unlink(), os.symlink(p.name, p))),  # ELOOP: unreadable
}
EVENTS = {
    "job5": lambda p: p.write_text('[1, 2]\n3\n"text"\n{"state": ["x"]}\n' + p.read_text()),
    "job6": lambda p: (p.unlink(), p.mkdir()),
}


def _damaged_workspace(xt_home):
    for _ in range(7):
        job = api.run_cell("x = 1\n", {"__name__": "__main__"}, outputs=["x"])
        assert job.refresh().state(job.runs[0]) == "completed"
    ws = _ws(xt_home)
    for job, (name, damage) in DAMAGE.items():
        damage(ws / "jobs" / job / name)
    for job, damage in EVENTS.items():
        damage(ws / "runs" / f"run{job[3:]}.1" / "events.jsonl")
    return ws


def test_listing_survives_every_damaged_object(sync_local, xt_home):
    _damaged_workspace(xt_home)
    df = api.jobs()
    rows = {r["job"]: r for r in df.to_dict("records")}
    assert sorted(rows) == [f"job{i}" for i in range(1, 8)]  # none dropped, none fatal
    assert "expected an object" in rows["job1"]["problem"]
    assert "'runs' should be a list" in rows["job2"]["problem"]
    assert "not valid JSON" in rows["job3"]["problem"]
    assert "cannot read ws1/jobs/job4/job.json" in rows["job4"]["problem"]
    assert rows["job5"]["status"] == "completed" and not rows["job5"]["problem"]  # bad lines skipped
    assert "ws1/runs/run6.1/events.jsonl" in rows["job6"]["problem"]
    assert rows["job7"]["status"] == "completed" and not rows["job7"]["problem"]
    assert list(api.jobs(status="completed")["job"]) == ["job5", "job7"]


@pytest.mark.parametrize("verb", ["status", "results", "logs", "cancel", "metrics"])
def test_verbs_answer_one_line_naming_the_object(sync_local, xt_home, verb):
    _damaged_workspace(xt_home)
    call = {"status": api.status, "results": api.results, "logs": api.logs,
            "cancel": api.cancel, "metrics": api.metrics}[verb]
    for job, where in [("job1", "ws1/jobs/job1/job.json"), ("job2", "ws1/jobs/job2/job.json"),
                       ("job3", "ws1/jobs/job3/job.json"), ("job4", "ws1/jobs/job4/job.json"),
                       ("job6", "ws1/runs/run6.1/events.jsonl")]:
        if verb == "metrics" and job == "job6":
            continue  # metrics does not read events
        with pytest.raises(XTError) as info:
            call(job)
        text = "".join(info.value._render_traceback_())
        assert where in text and "\n" not in text.strip(), text
    call("job7")  # the healthy job still works


def test_monitor_stops_on_a_damaged_object_and_says_so(sync_local, xt_home):
    from xt_magic.widgets.monitor import JobMonitor
    job = api.run_cell("x = 1\n", {"__name__": "__main__"})
    events = _ws(xt_home) / "runs" / "run1.1" / "events.jsonl"
    events.write_text('{"state": "created"}\n')  # live again, so the monitor polls it
    mon = JobMonitor(job.id, start=False)
    events.unlink()
    events.mkdir()
    mon._loop()  # returns: a damaged object ends the polling
    assert "ws1/runs/run1.1/events.jsonl" in mon.message.value + mon.notification.value
