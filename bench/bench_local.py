"""Local target benchmarks, printed as ratios measured in the same run.

    python bench/bench_local.py [--runs 1000] [--trivial 10]

1. trivial job: LocalBackend.submit of a one-run job -> its ``completed`` event, vs a bare
   ``python -c pass`` subprocess (target: <= 1.5 x bare + 100 ms);
2. sweep throughput: N runs through the local target with max-runs = cores, vs
   ``xargs -P<cores> python -c ...`` doing the same per-run work (target: >= 80 %).

The bundle and tickets are written up front (the client's packaging is benched separately), so
these numbers are the backend + runner cost.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from runner_helpers import launch_for, make_job  # noqa: E402  (hand-built tickets, as in tests)
from xt_magic.core.compute.local import LocalBackend  # noqa: E402
from xt_magic.core.storage.file import FileStore  # noqa: E402

CELL = "x = lr * 2\n"


def _launches(root, runs):
    return [launch_for(root, r, t) for r, _, t in runs]


def _wait_done(root, runs, timeout=3600):
    """Block until every run's events.jsonl holds a final state; returns when it saw it."""
    pending = [os.path.join(root, *t["paths"]["events"].split("/")) for _, _, t in runs]
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for path in pending:
            with open(path, "rb") as fh:
                data = fh.read()
            if b'"state": "completed"' in data:
                continue
            if b'"state": "failed"' in data or b'"state": "cancelled"' in data:
                raise SystemExit(f"run failed: {data.decode()[-500:]}")
            still.append(path)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            time.sleep(0.002)
    return time.perf_counter()


def bench_trivial(root, n):
    bare, job = [], []
    be = LocalBackend("local", {"service": "pool", "boxes": ["localhost"]}, config=None,
                      store=FileStore(root))
    for i in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
        runs = make_job(root, CELL, job=f"job{100 + i}", hparams={"lr": 0.1})
        t0 = time.perf_counter()
        be.submit(f"job{100 + i}", _launches(root, runs))
        job.append(_wait_done(root, runs) - t0)
    return statistics.median(bare), statistics.median(job)


def bench_sweep(root, n, cores):
    runs = make_job(root, CELL, job="job9", runs=n, hparams=[{"lr": i / n} for i in range(n)])
    be = LocalBackend("local", {"service": "pool", "boxes": ["localhost"], "max-runs": cores},
                      config=None, store=FileStore(root))
    t0 = time.perf_counter()
    be.submit("job9", _launches(root, runs))
    submit = time.perf_counter() - t0
    ours = _wait_done(root, runs) - t0
    # the same per-run work (set the hparam, run the cell) with xargs
    t0 = time.perf_counter()
    subprocess.run(["xargs", f"-P{cores}", "-I{}", sys.executable, "-c", "lr = {}\n" + CELL],
                   input="\n".join(str(i / n) for i in range(n)), text=True, check=True)
    xargs = time.perf_counter() - t0
    return ours, xargs, submit


LOG_CELL = """\
import time, xt_magic
t0 = time.perf_counter()
for i in range(100000):
    xt_magic.log(step=i, loss=1.0 / (i + 1))
print("per-call", (time.perf_counter() - t0) / 100000 * 1e6)
"""


def bench_log(root):
    """Cost of xt_magic.log inside a job (the real package, buffered by the runner)."""
    be = LocalBackend("local", {"service": "pool", "boxes": ["localhost"]}, config=None,
                      store=FileStore(root))
    runs = make_job(root, LOG_CELL, job="job8")
    be.submit("job8", _launches(root, runs))
    _wait_done(root, runs)
    console = os.path.join(root, *runs[0][2]["paths"]["console"].split("/"))
    return float(open(console).read().split("per-call")[1].split()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000, help="sweep size")
    ap.add_argument("--trivial", type=int, default=10, help="trivial-job repetitions")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="xt-bench-") as tmp:
        os.environ["XT_HOME"] = os.path.join(tmp, "xt_home")
        root = os.path.join(tmp, "store")
        bare, job = bench_trivial(root, args.trivial)
        limit = 1.5 * bare + 0.100
        print(f"trivial job: {job * 1000:.0f} ms vs bare python -c {bare * 1000:.0f} ms "
              f"(ratio {job / bare:.2f}x; target <= 1.5x bare + 100 ms = {limit * 1000:.0f} ms: "
              f"{'OK' if job <= limit else 'MISSED'})")
        print(f"xt_magic.log inside a job: {bench_log(root):.2f} us per call (buffered)")
        ours, xargs, submit = bench_sweep(root, args.runs, cores)
        ratio = xargs / ours
        print(f"sweep of {args.runs} runs, max-runs {cores}: {args.runs / ours:.1f} runs/s vs "
              f"xargs -P{cores} {args.runs / xargs:.1f} runs/s (throughput {ratio:.0%} of xargs; "
              f"target >= 80%: {'OK' if ratio >= 0.8 else 'MISSED'}); backend submit of the "
              f"{args.runs} launches {submit * 1000:.0f} ms")


if __name__ == "__main__":
    main()
