"""How much `%load_ext xt_magic` adds to an IPython start (target: <= 50 ms).

Runs fresh interpreters alternately — bare IPython shell start vs. the same plus
`load_extension("xt_magic")` — and prints medians, plus the in-process load_ext time and the
first config resolve (`%xt_config`, which imports ruamel.yaml and jsonschema on first use).

    python bench/bench_load_ext.py [REPEATS]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

PROBE = r"""
import json, os, sys, time
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t1 = time.perf_counter()
out = {"ipython": t1 - t0}
if sys.argv[1] == "ext":
    ip.extension_manager.load_extension("xt_magic")
    t2 = time.perf_counter()
    ip.run_line_magic("xt_config", "general.workspace")
    t3 = time.perf_counter()
    out.update(load_ext=t2 - t1, first_config=t3 - t2)
out["total"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def once(kind: str, env: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True,
                         env=env, check=True, cwd=env["XT_HOME"])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    home = tempfile.mkdtemp(prefix="xt_bench_")
    env = dict(os.environ, XT_HOME=home, XT_USER_CONFIG=os.path.join(home, "xt_config.yaml"),
               PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    once("bare", env), once("ext", env)  # warm the OS file cache and .pyc files
    bare, ext = [], []
    for _ in range(repeats):
        bare.append(once("bare", env))
        ext.append(once("ext", env))
    ms = lambda rows, key: 1000 * statistics.median(r[key] for r in rows)  # noqa: E731
    added = ms(ext, "total") - ms(ext, "first_config") - ms(bare, "total")
    print(f"runs: {repeats} each, python {sys.version.split()[0]}")
    print(f"bare IPython start (process-internal):     {ms(bare, 'total'):7.1f} ms")
    print(f"IPython start + %load_ext xt_magic:         {ms(ext, 'total') - ms(ext, 'first_config'):7.1f} ms")
    print(f"added by %load_ext (difference of medians): {added:7.1f} ms   (target <= 50 ms)")
    print(f"%load_ext alone, measured in-process:       {ms(ext, 'load_ext'):7.1f} ms")
    print(f"first %xt_config (ruamel+jsonschema+load):  {ms(ext, 'first_config'):7.1f} ms  (on first use, not at load)")


if __name__ == "__main__":
    main()
