"""Results and store objects under stress: a runs cache that never mixes jobs, outputs streamed
(never whole in the kernel's memory), zips refused entry by entry, one file-mode policy."""
from __future__ import annotations

import os
import shutil
import stat
import tracemalloc

import pytest

from runner_helpers import zip_bytes
from xt_magic.core import api, registry, session
from xt_magic.core.errors import JobError


@pytest.fixture
def sync_local(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "local", ("jobs_support:SyncBackend", ""))


WRITE = ("import os\nopen(os.path.join(os.environ['XT_OUTPUT_DIR'], {name!r}), 'w')"
         ".write({text!r})\n")


def test_runs_cache_is_per_store_and_submission(sync_local, xt_home):
    first = api.run_cell(WRITE.format(name="old.txt", text="old"), {"__name__": "__main__"})
    old_dir = api.results(first.id).runs["run1.1"].files_dir
    assert os.listdir(old_dir) == ["old.txt"]
    shutil.rmtree(xt_home / "file_store")  # a wiped (or another) store: ids start again
    session.reset_session()
    second = api.run_cell(WRITE.format(name="new.txt", text="new"), {"__name__": "__main__"})
    assert second.id == "job1"
    new_dir = api.results(second.id).runs["run1.1"].files_dir
    assert new_dir != old_dir and os.listdir(new_dir) == ["new.txt"]
    # a second fetch of the same run starts from an empty folder too
    open(os.path.join(new_dir, "stale.txt"), "w").write("x")
    assert os.listdir(api.results(second.id).runs["run1.1"].files_dir) == ["new.txt"]


def test_outputs_are_streamed_not_held_in_memory(sync_local):
    size = 64 * 2**20  # incompressible, so files.zip is as large
    job = api.run_cell("import os\nwith open(os.path.join(os.environ['XT_OUTPUT_DIR'], 'big.bin'),"
                       f" 'wb') as fh:\n    fh.write(os.urandom({size}))\nv = 1\n",
                       {"__name__": "__main__"}, outputs=["v"])
    assert job.refresh().state("run1.1") == "completed"
    tracemalloc.start()
    try:
        res = api.results(job.id)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert os.path.getsize(os.path.join(res.runs["run1.1"].files_dir, "big.bin")) == size
    assert res["v"] == 1
    assert peak < 16 * 2**20, f"kernel allocated {peak >> 20} MB for a {size >> 20} MB output"


@pytest.mark.parametrize("entries, named", [
    ({".": b"x"}, "'.'"),
    ({"a": b"file", "a/b": b"inside"}, "'a'"),
    ({"x" * 300: b"long"}, "name too long"),
    ({"d/" + "y" * 256 + "/f": b"long"}, "name too long"),
])
def test_unusable_zip_entries_are_refused_in_one_line(tmp_path, entries, named):
    from xt_magic.core.jobs.results import safe_extract
    with pytest.raises(JobError) as info:
        safe_extract(zip_bytes(entries), str(tmp_path / "out"))
    text = str(info.value)
    assert named in text and "refusing" in text and "\n" not in text
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")  # nothing written


@pytest.mark.parametrize("umask", [0o022, 0o007])
def test_every_store_object_follows_the_umask(sync_local, xt_home, umask):
    old = os.umask(umask)
    try:
        job = api.run_cell(WRITE.format(name="f.txt", text="x") + "v = 2 + k\nprint('hi')\n"
                           "import xt_magic\nxt_magic.log(step=1, loss=0.5)\n",
                           {"__name__": "__main__", "k": 3}, outputs=["v"])
        assert job.refresh().state("run1.1") == "completed"
    finally:
        os.umask(old)
    root = xt_home / "file_store"
    seen = set()
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, d)).st_mode)
            assert mode == 0o777 & ~umask, (os.path.join(folder, d), oct(mode))
        for f in files:
            mode = stat.S_IMODE(os.stat(os.path.join(folder, f)).st_mode)
            assert mode == 0o666 & ~umask, (os.path.join(folder, f), oct(mode))
            seen.add(f)
    assert {"job.json", "events.jsonl", "console.txt", "metrics.jsonl", "vars.pkl", "files.zip",
            "ticket.json", "cell.py", "inputs.pkl"} <= seen
