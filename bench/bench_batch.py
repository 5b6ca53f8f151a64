"""Azure Batch target against the local Batch server + Azurite (the test components).

    python bench/bench_batch.py [--runs 50]

Measures, for a sweep of ``--runs`` trivial runs (``score = lr * 10``) on one 10-slot node:
submit time (the whole ``run_cell``, and the backend's share), REST requests the backend sends per
run at submit, time until every run is completed, and what one ``poll`` of the live job costs
(REST requests to Batch). The nodes are local processes, so run times measure this machine, not
Azure; request counts are what carries over. The submit time is also measured with the per-run
store writes one after another (``fanout.SUBMIT_WORKERS = 1``, a second sweep) and printed as a
ratio; both sweeps follow a one-run warm-up job, so neither pays for imports.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

from batch_server.server import BatchServer  # noqa: E402
from bench_util import isolated_home, time_submits, write_config  # noqa: E402
from fixtures.azurite import start_azurite, stop  # noqa: E402
from fixtures.batch_server import IMAGE  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    work = isolated_home("bench_batch_")
    proc, azurite = start_azurite(work)
    server = BatchServer(os.path.join(work, "nodes")).start()
    try:
        cfg = {
            "external-services": {
                "teamstore": {"type": "storage", "provider": "azure-blob", "container": "bench",
                              "connection-string": azurite.connection_string},
                "xtbatch": {"type": "batch", "url": server.url, "name": server.account,
                            "key": server.key}},
            "xt-services": {"storage": "teamstore", "target": "batch"},
            "azure-batch-images": {"ubuntu": IMAGE},
            "compute-targets": {"batch": {"service": "xtbatch", "vm-size": "Standard_D2s_v3",
                                          "azure-image": "ubuntu", "max-runs": 10,
                                          "python": sys.executable}},
            "code": {"code-upload": False}}
        write_config(cfg)
        from xt_magic.core.compute import batch
        from xt_magic.core.jobs import fanout, submit
        from xt_magic.core.session import get_session
        spent = time_submits(batch.BatchBackend)
        submit.run_cell(get_session(), "score = 1", {}).wait(timeout=600, progress=False)  # warm
        workers = getattr(fanout, "SUBMIT_WORKERS", 1)
        fanout.SUBMIT_WORKERS = 1  # the sequential baseline
        t = time.perf_counter()
        base = submit.run_cell(get_session(), "score = lr * 10", {},
                                hp={"lr": list(range(args.runs))}, outputs=["score"])
        seq_submit, seq_backend = time.perf_counter() - t, spent[-1]
        base.wait(timeout=600, progress=False)
        fanout.SUBMIT_WORKERS = workers
        received = len(server.received)
        t0 = time.perf_counter()
        job = submit.run_cell(get_session(), "score = lr * 10", {},
                               hp={"lr": list(range(args.runs))}, outputs=["score"])
        t1 = time.perf_counter()
        sent = len(server.received) - received
        time.sleep(0.5)
        before = len(server.received)
        job._backend().poll(job.id, job.runs)
        per_poll = len(server.received) - before
        job.wait(timeout=600, progress=False)
        t2 = time.perf_counter()
        assert job.states() == {"completed": args.runs}, job.states()
        print(f"runs: {args.runs} (1 node, 10 slots)")
        print(f"run_cell submit: {t1 - t0:.2f}s, of which BatchBackend.submit {spent[-1]:.2f}s "
              f"({workers} workers for the per-run store writes)")
        print(f"  sequential per-run writes: {seq_submit:.2f}s, of which BatchBackend.submit "
              f"{seq_backend:.2f}s; concurrent / sequential: {(t1 - t0) / seq_submit:.2f}x")
        print(f"Batch REST requests at submit: {sent} ({sent / args.runs:.2f} per run)")
        print(f"one poll of the live job: {per_poll} Batch requests")
        print(f"submit -> all completed: {t2 - t1:.2f}s")
    finally:
        server.stop()
        stop(proc)


if __name__ == "__main__":
    main()
