"""Upload throughput of a 200 MB snapshot to Azurite: AzureBlobStore.upload_file vs a raw
azure-storage-blob upload (same file, same Azurite, same run, alternating). Target: >= 90%.

    .venv/bin/python bench/bench_blob_upload.py [--mb 200] [--repeat 3] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from azure.storage.blob import BlobServiceClient
    from fixtures.azurite import start_azurite, stop
    from xt_magic.core.session import Session
    from xt_magic.core.storage.azure_blob import AzureBlobStore

    with tempfile.TemporaryDirectory() as tmp:
        proc, az = start_azurite(tmp)
        try:
            src = os.path.join(tmp, "snapshot.zip")
            with open(src, "wb") as fh:
                for _ in range(args.mb):
                    fh.write(os.urandom(1 << 20))
            size = os.path.getsize(src)
            store = AzureBlobStore.from_config(
                "bench", {"connection-string": az.connection_string, "container": "bench",
                          "max-concurrency": args.concurrency}, Session())
            raw = BlobServiceClient.from_connection_string(az.connection_string) \
                .get_container_client("bench")
            store.write_bytes("warmup", b"x")  # creates the container

            def through_store(i):
                store.upload_file(f"snapshots/s{i}.zip", src, progress=lambda d, t: None)

            def raw_sdk(i):
                with open(src, "rb") as fh:
                    raw.upload_blob(f"raw/r{i}.zip", fh, length=size, overwrite=True,
                                    max_concurrency=args.concurrency)

            times = {"store": [], "raw": []}
            for i in range(args.repeat):
                pair = (("raw", raw_sdk), ("store", through_store))
                for name, fn in (pair if i % 2 == 0 else pair[::-1]):  # no first-mover bias
                    t0 = time.perf_counter()
                    fn(i)
                    times[name].append(time.perf_counter() - t0)
            mbs = {k: [size / 2**20 / t for t in v] for k, v in times.items()}
            for k in ("raw", "store"):
                print(f"{k:6s} {args.mb} MB: " + ", ".join(f"{x:.0f}" for x in mbs[k]) +
                      f" MB/s (median {statistics.median(mbs[k]):.0f})")
            ratio = statistics.median(mbs["store"]) / statistics.median(mbs["raw"])
            best = max(mbs["store"]) / max(mbs["raw"])
            print(f"store/raw throughput: median {ratio:.0%}, best {best:.0%} (target >= 90%; "
                  f"on a loaded machine compare best-of)")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
