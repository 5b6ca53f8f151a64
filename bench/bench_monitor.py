"""How cheap is a JobMonitor poll? Run by hand: ``python bench/bench_monitor.py [RUNS] [LINES]``.

A synthetic job of RUNS live runs, each with LINES metric records, in a file store. Compares one
monitor tick (incremental: reads only appended bytes) with a naive poll that re-reads and re-parses
every run's events and metrics files, in the same run on the same data.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(runs: int = 100, lines: int = 2000) -> None:
    home = tempfile.mkdtemp(prefix="xt-bench-monitor-")
    os.environ["XT_HOME"] = home
    os.environ["XT_USER_CONFIG"] = os.path.join(home, "xt_config.yaml")
    os.chdir(home)
    import json
    from xt_magic.core.jobs.records import JobRecord
    from xt_magic.core.protocol.layout import Layout
    from xt_magic.core.protocol.events import make_event, parse as parse_events, fold
    from xt_magic.core.session import get_session
    from xt_magic.core.storage import get_store
    from xt_magic.widgets.monitor import JobMonitor

    session = get_session()
    store = get_store(session, session.config())
    lay = Layout("ws1")
    ids = [f"run1.{i}" for i in range(1, runs + 1)]
    JobRecord(job="job1", workspace="ws1", target="local", backend="local", submitted="now", user="b",
              runs=ids, hparams=[{"lr": i / runs} for i in range(runs)]).save(store)
    from xt_magic.core.protocol import keys
    keys.job_key(store, "ws1", "job1", create=True)  # as a submit makes it (outputs are checked)
    for run in ids:
        store.append(lay.run(run, "events.jsonl"), make_event("created") + make_event("running"))
        store.append(lay.run(run, "metrics.jsonl"), b"".join(
            (json.dumps({"kind": "metrics", "step": s, "values": {"loss": 1 / (s + 1)}}) + "\n").encode()
            for s in range(lines)))

    def naive_poll() -> int:
        total = 0
        for run in ids:
            for name in ("events.jsonl", "metrics.jsonl"):
                data = store.read_from(lay.run(run, name), 0)
                total += len(data)
                parsed = parse_events(data)
                if name == "events.jsonl":
                    fold(parsed)
        return total

    mon = JobMonitor("job1", session=session, start=False, reconcile_every=1e9)
    t = time.perf_counter()
    mon.tick()
    first = time.perf_counter() - t

    def timed(fn, n=5):
        best = float("inf")
        for _ in range(n):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    before = mon.bytes_read
    idle = timed(mon.tick)
    idle_bytes = (mon.bytes_read - before) / 5
    naive = timed(naive_poll)
    naive_bytes = naive_poll()

    def append_and_tick():
        for run in ids:
            store.append(lay.run(run, "metrics.jsonl"),
                         b'{"kind": "metrics", "step": 99999, "values": {"loss": 0.001}}\n')
        t = time.perf_counter()
        mon.tick()
        return time.perf_counter() - t
    busy = min(append_and_tick() for _ in range(5))

    print(f"{runs} live runs x {lines} metric lines; file store")
    print(f"  first tick (reads everything once): {first * 1000:8.1f} ms")
    print(f"  monitor tick, nothing new:          {idle * 1000:8.1f} ms, {idle_bytes:.0f} bytes read")
    print(f"  monitor tick, 1 new line per run:   {busy * 1000:8.1f} ms")
    print(f"  naive poll (re-read + parse all):   {naive * 1000:8.1f} ms, {naive_bytes} bytes read")
    print(f"  ratio naive / idle tick: {naive / idle:.1f}x;  naive / busy tick: {naive / busy:.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
