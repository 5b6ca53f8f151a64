"""Submit time of a sweep on the local target with the Azure blob store (Azurite), with the per-run
store writes concurrent (the default) and one after another (``fanout.SUBMIT_WORKERS = 1``), as a
ratio measured in the same run.

    PATH=node_modules/.bin:$PATH .venv/bin/python bench/bench_blob_submit.py [--runs 50]

Each repeat submits one ``--runs`` sweep per mode (alternating which goes first) and waits for it
to finish before the next, so runs never compete with a submit. Prints the medians of the whole
``run_cell`` and of the backend's share (``LocalBackend.submit``, which appends each run's
``queued`` event). Azurite runs on this machine: a real storage account adds network latency to
every request, which the concurrent writes overlap and the sequential ones add up.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from bench_util import isolated_home, time_submits, write_config  # noqa: E402
from fixtures.azurite import start_azurite, stop  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = isolated_home("bench_blob_submit_")
    proc, azurite = start_azurite(work)
    try:
        cfg = {"external-services": {
                   "teamstore": {"type": "storage", "provider": "azure-blob", "container": "bench",
                                 "connection-string": azurite.connection_string}},
               "xt-services": {"storage": "teamstore", "target": "local"},
               "code": {"code-upload": False}}
        write_config(cfg)
        from xt_magic.core.compute import local
        from xt_magic.core.jobs import fanout, submit
        from xt_magic.core.session import get_session
        spent = time_submits(local.LocalBackend)
        default_workers = getattr(fanout, "SUBMIT_WORKERS", 1)

        def sweep(workers: int) -> tuple[float, float]:
            fanout.SUBMIT_WORKERS = workers
            t = time.perf_counter()
            job = submit.run_cell(get_session(), "score = lr * 10", {},
                                   hp={"lr": list(range(args.runs))}, outputs=["score"])
            took = time.perf_counter() - t
            job.wait(timeout=600, progress=False)
            assert job.states() == {"completed": args.runs}, job.states()
            return took, spent[-1]

        sweep(default_workers)  # warm: imports, config, store client, container
        times: dict[str, list] = {"sequential": [], "concurrent": []}
        for i in range(args.repeats):
            order = [("sequential", 1), ("concurrent", default_workers)]
            for mode, workers in (order if i % 2 == 0 else order[::-1]):
                times[mode].append(sweep(workers))
        fanout.SUBMIT_WORKERS = default_workers
        med = {mode: (statistics.median(t for t, _ in v), statistics.median(b for _, b in v))
               for mode, v in times.items()}
        print(f"local target + blob store (Azurite), {args.runs}-run sweep, "
              f"median of {args.repeats}, {os.cpu_count()} cores")
        for mode, (total, backend) in med.items():
            workers = 1 if mode == "sequential" else default_workers
            print(f"  run_cell submit, {mode:<10} ({workers:>2} workers): {total:6.2f}s "
                  f"({total / args.runs * 1000:6.1f} ms/run), of which LocalBackend.submit "
                  f"{backend:.2f}s")
        seq, conc = med["sequential"][0], med["concurrent"][0]
        print(f"  concurrent / sequential: {conc / seq:.2f}x ({seq / conc:.1f}x faster)")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
