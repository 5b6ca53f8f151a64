"""job.wait() progress is clean: tqdm (a dependency) in a terminal, padded when the text gets
shorter; plain lines, no carriage returns, into a file."""
from __future__ import annotations

import io

from xt_magic.core import api
from xt_magic.core.jobs.job import _Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_into_a_file_is_one_line_per_change_without_carriage_returns():
    out = io.StringIO()
    job = api.run_cell("import time\ntime.sleep(0.2 * k)\n", {}, hp={"k": [1, 2]})
    job.wait(timeout=60, out=out)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[-1] == f"{job.id}: 2/2 done (2 completed)"
    assert len(lines) == len(set(lines))  # a line only when something changed


def test_terminal_progress_pads_a_shorter_text_so_nothing_is_left_over():
    out = Terminal()
    bar = _Progress(6, "job4", out=out)
    bar.update(4, "4 completed, 2 running")
    bar.update(6, "6 completed")
    bar.close()
    frames = [f for f in out.getvalue().split("\r") if f.strip()]
    # what a terminal shows: each \r redraw overwrites the line from its start
    line = ""
    for frame in out.getvalue().replace("\n", "").split("\r"):
        line = frame + line[len(frame):]
    assert line.rstrip() == frames[-1].strip()  # no "... 6 completed]running]" left over
    assert "6/6" in line and "running" not in line


def test_the_default_is_tqdm_auto():
    bar = _Progress(2, "job1")
    try:
        assert type(bar.bar).__module__.startswith("tqdm")
    finally:
        bar.close()
