"""Cost of recording cell outputs (outputs.jsonl + the run notebook) on a trivial local job, as a
ratio against the same job without capture (``general.max-output-mb: 0``) in the same run.

    .venv/bin/python bench/bench_capture.py [--repeats 21]

Target (issue 11): capture adds <= 10% to a trivial job's submit -> completed time. The two kinds
alternate so drift on a shared machine hits both alike; prints one table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import isolated_home  # noqa: E402

CELL = "x = 21\nprint('x is', x)\nx * 2\n"  # a stream and a value: the capture path does work


def submit_to_done(api, ns) -> float:
    t = time.perf_counter()
    job = api.run_cell(CELL, ns)
    while True:  # watch the events only: backend.poll in a tight loop would steal CPU
        job._read()
        if job.done:
            break
        time.sleep(0.003)
    took = time.perf_counter() - t
    assert job.state(job.runs[0]) == "completed", job
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    isolated_home("xt-bench-capture-")
    from xt_magic.core import api
    ns = {"__name__": "__main__"}
    times = {"capture": [], "no capture": []}
    for mb in ("20", "0"):  # warm both paths: config, store, backend, imports
        api.config_set({"general.max-output-mb": mb})
        submit_to_done(api, ns)
    for _ in range(args.repeats):
        for kind, mb in (("capture", "20"), ("no capture", "0")):
            api.config_set({"general.max-output-mb": mb})
            times[kind].append(submit_to_done(api, ns))
    on, off = statistics.median(times["capture"]), statistics.median(times["no capture"])
    ratio = on / off
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.repeats} repeats")
    print(f"trivial job, no capture (median)  {off * 1000:8.1f} ms")
    print(f"trivial job, capture (median)     {on * 1000:8.1f} ms")
    print(f"capture / no capture              {ratio:8.3f}   target <= 1.10: "
          f"{'OK' if ratio <= 1.10 else 'MISS'}")


if __name__ == "__main__":
    main()
