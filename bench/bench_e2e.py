"""End to end through the public API (submit -> values back in the kernel), each target printed
as a ratio against its baseline measured in the same run, and against submitit's LocalExecutor
(``pip install xt-magic[bench]``) in the same run. Medians.

    python bench/bench_e2e.py [--quick] [--repeats 9] [--sweeps 200,1000] [--jobs 1000]

Targets (issue 16):
  trivial   one-run cell, one output, submit -> value: <= 1.0x bare ``python -c pass``
  first     first run_cell in a fresh kernel adds <= 80 ms over the second
  notice    wait() returns within 10 ms of the run's final event
  sweep N   N runs with an output, all values back: >= 2x ``xargs -P<cores> python -c``
  poll      one Job.refresh on a 1,000-run job reads O(changed runs) events files
  memory    kernel RSS growth from listing and fetching 1,000 jobs: < 50 MB
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # runner_helpers.events_reads

from bench_util import isolated_home  # noqa: E402


def median_of(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def bare_python() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


def xargs_sweep(n: int, cores: int) -> float:
    t = time.perf_counter()
    subprocess.run(["xargs", f"-P{cores}", "-I{}", sys.executable, "-c", "lr = {}\ny = lr * 2"],
                   input="\n".join(str(i / n) for i in range(n)), text=True, check=True)
    return time.perf_counter() - t


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


FIRST = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
t = time.perf_counter()
from xt_magic.core import api
ns = {"__name__": "__main__"}
out = []
for _ in range(2):
    t = time.perf_counter()
    job = api.run_cell("y = 1", ns, outputs=["y"])
    s = time.perf_counter() - t
    job.wait(progress=False)
    assert job.results()["y"] == 1
    out.append((s, time.perf_counter() - t))
print(json.dumps(out))
"""


def first_vs_second() -> tuple[float, float]:
    """(submit, submit->value) excess of the first run_cell of a fresh process over its second."""
    # as an installed package runs: with bytecode caches (the first process writes them)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", FIRST, ROOT], check=True,
                             capture_output=True, text=True, env=env).stdout
    (s1, d1), (s2, d2) = json.loads(out.strip().splitlines()[-1])
    return s1 - s2, d1 - d2


def ours_trivial(api, ns) -> float:
    t = time.perf_counter()
    job = api.run_cell("y = 1", ns, outputs=["y"])
    job.wait(progress=False)
    assert job.results()["y"] == 1
    return time.perf_counter() - t


def notice_latency(api, ns) -> float:
    """Seconds from the runner's final event (its ts) to wait() returning."""
    job = api.run_cell("import time\ntime.sleep(0.2)\ny = 1", ns, outputs=["y"])
    job.wait(progress=False)
    back = time.time()
    return back - job.info(job.runs[0])["events"][-1]["ts"]


def ours_sweep(api, ns, n: int) -> float:
    t = time.perf_counter()
    job = api.run_cell("y = lr * 2", ns, hp={"lr": [i / n for i in range(n)]}, outputs=["y"])
    job.wait(progress=False)
    res = job.results()
    values = [r["y"] for r in res.runs_list]
    assert len(values) == n and all(v is not None for v in values)
    return time.perf_counter() - t


def _one():
    return 1


def _double(lr):
    return lr * 2


def _executor(folder: str):
    """submitit's LocalExecutor, or None when submitit is not installed (the [bench] extra)."""
    try:
        import submitit
    except ImportError:
        return None
    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=30)
    return ex


def submitit_trivial(folder: str) -> float | None:
    ex = _executor(folder)
    if ex is None:
        return None
    t = time.perf_counter()
    assert ex.submit(_one).result() == 1
    return time.perf_counter() - t


def submitit_sweep(folder: str, n: int, cores: int) -> float | None:
    ex = _executor(folder)
    if ex is None:
        return None
    t = time.perf_counter()
    jobs = []
    for i in range(n):  # LocalExecutor runs what it is given at once: keep <= cores in flight
        jobs.append(ex.submit(_double, i / n))
        if len(jobs) >= cores:
            jobs[-cores].result()
    assert len([j.result() for j in jobs]) == n
    return time.perf_counter() - t


def poll_reads(api, ns, n: int) -> tuple[int, int, int, float, float]:
    """On an n-run job with every run live (2 sleeping, the rest queued): events files read by
    a first Job read, by one with nothing changed and by one with one run changed; and the
    seconds of the first and of the unchanged read."""
    from xt_magic.core.jobs.job import Job
    from xt_magic.core.protocol import events
    from xt_magic.core.protocol.layout import Layout
    from runner_helpers import events_reads
    job = api.run_cell("import time\ntime.sleep(600)", ns, hp={"i": list(range(n))})
    busy = min(n, os.cpu_count() or 1)
    while job.refresh().states().get("running", 0) < busy:  # else a start lands mid-measure
        time.sleep(0.01)
    counts, spent = [], []
    fresh = None
    try:
        with events_reads() as reads:
            for change in (None, False, True):
                reads.clear()
                if change:
                    events.append(fresh._ctx().store, Layout(job.record.workspace).events(
                        job.runs[-1]), events.FAILED, reason="bench")
                t = time.perf_counter()
                if fresh is None:
                    fresh = Job(job.session, job.record)  # its first read
                else:
                    fresh._read()
                spent.append(time.perf_counter() - t)
                counts.append(len(reads))
    finally:
        job.cancel()
    return counts[0], counts[1], counts[2], spent[0], spent[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, 200-run sweep only")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--sweeps", default=None, help="comma-separated sweep sizes")
    ap.add_argument("--jobs", type=int, default=None, help="jobs listed and fetched (memory)")
    args = ap.parse_args()
    repeats = args.repeats or (5 if args.quick else 9)
    args.jobs = args.jobs or (100 if args.quick else 1000)
    sweeps = [int(s) for s in (args.sweeps or ("200" if args.quick else "200,1000")).split(",")]
    cores = os.cpu_count() or 1
    work = isolated_home("xt-bench-e2e-")
    # outside the working dir: it is the jobs' code snapshot, which submitit's files would bloat
    peer_dir = tempfile.mkdtemp(prefix="submitit-", dir=os.path.dirname(work))
    from xt_magic.core import api
    ns = {"__name__": "__main__"}
    rows = []

    def row(name, ours, base, base_name, peer=None, target=""):
        ratio = ours / base if base else float("nan")
        text = f"{name:<22} {ours * 1000:9.1f} ms  {ratio:5.2f}x {base_name} ({base * 1000:.1f} ms)"
        if peer:
            text += f"  {peer / ours:6.1f}x faster than submitit ({peer * 1000:.0f} ms)"
        rows.append(text + (f"  [{target}]" if target else ""))

    first_submit, first_done = first_vs_second()
    ours_trivial(api, ns)  # warm
    bare = median_of(bare_python, repeats)
    trivial = median_of(lambda: ours_trivial(api, ns), repeats)
    peer = [submitit_trivial(peer_dir) for _ in range(max(3, repeats // 3))]
    peer_t = statistics.median(peer) if None not in peer else None
    row("trivial submit->value", trivial, bare, "bare python -c pass", peer_t, "<= 1.0x")
    rows.append(f"{'first run_cell extra':<22} {first_done * 1000:9.1f} ms over the second "
                f"(submit alone {first_submit * 1000:.1f} ms)  [<= 80 ms]")
    notice = median_of(lambda: notice_latency(api, ns), repeats)
    rows.append(f"{'final event -> wait()':<22} {notice * 1000:9.1f} ms  [<= 10 ms]")
    for n in sweeps:  # alternated, so load from elsewhere hits both alike
        reps = 1 if args.quick or n >= 1000 else 3
        pairs = [(xargs_sweep(n, cores), ours_sweep(api, ns, n)) for _ in range(reps)]
        base = statistics.median(b for b, _ in pairs)
        ours = statistics.median(o for _, o in pairs)
        pn = min(n, 40)  # submitit: ~0.2 s per run, so its throughput from a shorter sweep
        peer_s = submitit_sweep(peer_dir, pn, cores)
        peer_n = peer_s * n / pn if peer_s else None
        row(f"sweep {n} --outputs", ours, base, f"xargs -P{cores}", peer_n,
            ">= 2x xargs throughput: ratio <= 0.5x")
    first, idle, one, t_first, t_idle = poll_reads(api, ns, 1000)
    rows.append(f"{'poll of 1000 live runs':<22} events files read: first {first} "
                f"({t_first * 1000:.0f} ms), none changed {idle} ({t_idle * 1000:.1f} ms), one "
                f"changed {one}  [O(changed)]")
    made = len(api.jobs())
    jobs = [api.run_cell("y = i", ns, hp={"i": [k]}, outputs=["y"])
            for k in range(max(0, args.jobs - made))]
    for job in jobs:
        job.wait(progress=False)
    del jobs
    api.results(api.jobs()["job"].iloc[0])  # warm: the listing's and results' imports
    import gc
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    table = api.jobs()
    for job_id in list(table["job"]):
        api.results(job_id)
    listed = time.perf_counter() - t
    del table
    gc.collect()
    rows.append(f"{'RSS growth':<22} {rss_mb() - rss0:9.1f} MB after listing + fetching "
                f"{max(made, args.jobs)} jobs ({listed:.2f} s)  [< 50 MB]")
    print(f"bench_e2e: {cores} cores, python {sys.version.split()[0]}, medians of {repeats}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
