"""Submit latency, trivial-job completion and sweep throughput on the local target, as ratios
against baselines measured in the same run (a bare ``python -c`` subprocess; ``xargs -P<cores>``).

    .venv/bin/python bench/bench_submit.py [--sweep 1000] [--repeats 15]

Targets (issue 3): submit <= 50 ms; trivial job done <= 1.5x bare + 100 ms; sweep throughput
>= 80% of xargs. Runs in a temporary XT_HOME and working directory; prints one table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def bare_python(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "x = 1"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def xargs_throughput(n: int, cores: int) -> float:
    """Seconds for ``n`` trivial ``python -c`` processes through ``xargs -P cores``."""
    t = time.perf_counter()
    subprocess.run(["xargs", "-P", str(cores), "-n", "1", sys.executable, "-c"],
                   input=("'x = 1'\n" * n).encode(), check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="xt-bench-")
    os.environ["XT_HOME"] = os.path.join(work, "xt_home")
    os.environ["XT_USER_CONFIG"] = os.path.join(work, "xt_home", "xt_config.yaml")
    os.makedirs(os.path.join(work, "cwd"))
    os.chdir(os.path.join(work, "cwd"))
    from xt_magic.core import api
    cores = os.cpu_count() or 1
    ns = {"__name__": "__main__"}

    bare = bare_python(args.repeats)
    api.run_cell("x = 1", ns).wait(progress=False)  # warm: config, store, backend, imports
    submits, dones = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        job = api.run_cell("x = 1", ns)
        submits.append(time.perf_counter() - t)
        while True:  # watch the events file only: backend.poll in a tight loop would steal CPU
            job._read()
            if job.done:
                break
            time.sleep(0.003)
        dones.append(time.perf_counter() - t)
    submit, done = statistics.median(submits), statistics.median(dones)

    t = time.perf_counter()
    sweep = api.run_cell("x = i", ns, hp={"i": f"$linspace(0,{args.sweep - 1},{args.sweep})"})
    sweep_submit = time.perf_counter() - t
    while not sweep.refresh().done:
        time.sleep(0.25)
    sweep_total = time.perf_counter() - t
    failed = sweep.states().get("failed", 0)
    xargs = xargs_throughput(args.sweep, cores)

    rows = [
        ("bare `python -c` (median)", f"{bare * 1000:.1f} ms", ""),
        ("submit latency (median)", f"{submit * 1000:.1f} ms",
         f"{submit / bare:.2f}x bare; target <= 50 ms: {'OK' if submit <= 0.05 else 'MISS'}"),
        ("trivial job submit->completed", f"{done * 1000:.1f} ms",
         f"{done / bare:.2f}x bare; target <= 1.5x bare + 100 ms = {(1.5 * bare + 0.1) * 1000:.0f}"
         f" ms: {'OK' if done <= 1.5 * bare + 0.1 else 'MISS'}"),
        (f"{args.sweep}-run sweep submit", f"{sweep_submit * 1000:.0f} ms",
         f"{sweep_submit * 1000 / args.sweep:.2f} ms/run"),
        (f"{args.sweep}-run sweep done", f"{sweep_total:.1f} s",
         f"{args.sweep / sweep_total:.1f} runs/s ({failed} failed)"),
        (f"xargs -P{cores} python -c x{args.sweep}", f"{xargs:.1f} s",
         f"{args.sweep / xargs:.1f} runs/s"),
        ("sweep throughput vs xargs", f"{xargs / sweep_total:.0%}",
         f"target >= 80%: {'OK' if xargs / sweep_total >= 0.8 else 'MISS'}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"python {sys.version.split()[0]}, {cores} cores, store {os.environ['XT_HOME']}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


if __name__ == "__main__":
    main()
