"""Kernel memory for a large output file, printed against the kernel's own baseline.

    python bench/bench_output_memory.py [--mb 1024]

A local job writes one incompressible file of ``--mb`` MB under XT_OUTPUT_DIR; this process (the
"kernel") waits for it and fetches its results (download, sha256 check, extraction). Printed:
the kernel's resident memory before (warmed up: a small job already fetched) and its peak during
the fetch (VmHWM, reset just before). Target: peak - baseline < 150 MB, whatever the size (outputs
are streamed through files, never held whole).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from bench_util import isolated_home  # noqa: E402

CELL = ("import os\nwith open(os.path.join(os.environ['XT_OUTPUT_DIR'], 'big.bin'), 'wb') as fh:\n"
        "    for _ in range({mb}):\n        fh.write(os.urandom(1 << 20))\nv = 1\n")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    args = parser.parse_args()
    isolated_home("xt-bench-outmem-")
    from xt_magic.core import api
    ns = {"__name__": "__main__"}
    warm = api.run_cell(CELL.format(mb=1), ns, outputs=["v"])  # every code path loaded once
    warm.wait(progress=False)
    api.results(warm.id)
    big = api.run_cell(CELL.format(mb=args.mb), ns, outputs=["v"])
    t = time.perf_counter()
    big.wait(progress=False)
    ran = time.perf_counter() - t
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS: the peak from here on
    baseline = _status_kb("VmRSS")
    t = time.perf_counter()
    res = api.results(big.id)
    fetched = time.perf_counter() - t
    peak = _status_kb("VmHWM")
    size = os.path.getsize(os.path.join(res.runs[big.runs[0]].files_dir, "big.bin"))
    assert size == args.mb << 20, size
    extra = (peak - baseline) / 1024
    print(f"output file: {args.mb} MB (run {ran:.1f}s, fetch {fetched:.1f}s)")
    print(f"kernel RSS baseline {baseline / 1024:.0f} MB, peak during fetch {peak / 1024:.0f} MB: "
          f"+{extra:.0f} MB (target < 150 MB) {'OK' if extra < 150 else 'OVER'}")


if __name__ == "__main__":
    main()
