"""Remote target latency, against bare baselines measured in the same run.

    python bench/bench_remote.py [--n 10]

Starts an sshd on loopback and a single-node Slurm (the test fixtures' helpers), then measures the
submit-to-done latency of a trivial cell (``x = 1``):

1. pool: PoolBackend.submit -> the run's ``completed`` event (connection warm, as in a kernel),
   vs a bare ``ssh host true`` (new OpenSSH connection each time);
2. slurm: SlurmBackend.submit -> ``completed``, vs ``sbatch --wait --wrap true``.

The bundle and tickets are written up front (packaging is benched in bench_submit.py), so the
numbers are backend + transport + runner. Needs root (sshd, slurmd) and the test components.
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

from fixtures.slurm import start_slurm  # noqa: E402
from fixtures.sshd import keygen, start_sshd  # noqa: E402
from runner_helpers import launch_for, make_job  # noqa: E402
from xt_magic.core.compute import ssh  # noqa: E402
from xt_magic.core.compute.pool import PoolBackend  # noqa: E402
from xt_magic.core.compute.slurm import SlurmBackend  # noqa: E402
from xt_magic.core.config import ResolvedConfig  # noqa: E402
from xt_magic.core.storage.file import FileStore  # noqa: E402


def Cfg(data):
    """A resolved config holding just ``data`` (no files, no layers)."""
    return ResolvedConfig(data, {}, [])


def _wait_completed(store, run, timeout=120):
    path = store.local_path(f"ws1/runs/{run}/events.jsonl")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as fh:
            data = fh.read()
        if b'"state": "completed"' in data:
            return time.perf_counter()
        if b'"state": "failed"' in data or b'"state": "cancelled"' in data:
            raise SystemExit(f"run failed: {data.decode()[-400:]}")
        time.sleep(0.005)
    raise SystemExit("timed out")


def _timed_jobs(backend, store, n, first_job):
    times = []
    for i in range(n):
        job = f"job{first_job + i}"
        (run, _p, ticket), = make_job(store.root, "x = 1\n", job=job)
        launch = launch_for(store.root, run, ticket)
        t0 = time.perf_counter()
        backend.submit(job, [launch])
        times.append(_wait_completed(store, run) - t0)
    return times


def _timed(cmd, n, env=None):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t0)
    return times


def _report(name, ours, bare, bare_name):
    m, b = statistics.median(ours), statistics.median(bare)
    print(f"{name:6s} submit->completed median {m * 1000:7.0f} ms (min {min(ours) * 1000:.0f}) | "
          f"{bare_name} median {b * 1000:7.0f} ms | ratio {m / b:5.2f}x, overhead "
          f"{(m - b) * 1000:+.0f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--skip-slurm", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="xt_bench_remote_")
    os.environ["XT_HOME"] = os.path.join(tmp, "xt_home")
    os.makedirs(os.environ["XT_HOME"])
    store = FileStore(os.path.join(tmp, "store"))
    key = os.path.join(tmp, "id_ed25519")
    server = start_sshd(os.path.join(tmp, "sshd"), key, keygen(key))
    try:
        server.trust(os.environ["XT_HOME"])
        cfg = Cfg({"boxes": {"b1": server.box(**{"max-runs": 4})}, "general": {"workspace": "ws1"}})
        pool = PoolBackend("pool", {"service": "pool", "boxes": ["b1"]}, config=cfg, store=store)
        _timed_jobs(pool, store, 1, 9000)  # warm: connection, python caches
        ours = _timed_jobs(pool, store, args.n, 1)
        known = os.path.join(os.environ["XT_HOME"], "known_hosts")
        bare = _timed(["ssh", "-i", key, "-p", str(server.port), "-o", f"UserKnownHostsFile={known}",
                       "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                       f"{server.user}@127.0.0.1", "true"], args.n)
        _report("pool", ours, bare, "bare `ssh host true`")
        ssh.close()
    finally:
        server.stop()
    if args.skip_slurm:
        return
    cluster = start_slurm(os.path.join(tmp, "slurm"))
    try:
        slurm = SlurmBackend("cluster", {"service": "slurm"}, config=Cfg({}), store=store)
        _timed_jobs(slurm, store, 1, 9001)
        ours = _timed_jobs(slurm, store, args.n, 100)
        bare = _timed(["sbatch", "--wait", "--wrap", "true", f"--output={tmp}/wrap-%j.out"], args.n)
        _report("slurm", ours, bare, "`sbatch --wait --wrap true`")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
