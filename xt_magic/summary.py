"""``python -m xt_magic.summary [NOTEBOOK ...]``: run notebooks, keep them, say what they left.

Each notebook runs top to bottom (nbclient, in its own directory) and its executed copy is kept
(``--output-dir``, default ``./executed``); then a short summary of the workspace's jobs follows:
one line per job (id, name, target, status, run states) and a result value of the last job that
has one. A failing cell stops with its error in one line. The README's main job ends with this, so
a first run reads as a few lines, not a log.
"""
from __future__ import annotations

import argparse
import os
import sys

MAX_JOBS = 10


def execute(path: str, output_dir: str, timeout: int = 600) -> str:
    """Run ``path`` in its own directory; write the executed copy; return where it went.
    Raises RuntimeError naming the cell whose code failed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(path, as_version=4)
    # the kernel's start-up warnings (plain-text TCP on loopback) are not the user's business
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
    os.makedirs(output_dir, exist_ok=True)
    out = os.path.join(output_dir, os.path.basename(path))
    try:
        client.execute()
    except CellExecutionError as err:
        nbformat.write(nb, out)
        last = [line for line in str(err).strip().splitlines() if line.strip()]
        raise RuntimeError(f"{path}: a cell failed: {last[-1] if last else err} "
                           f"(executed copy: {out})") from None
    nbformat.write(nb, out)
    return out


def job_lines(limit: int = MAX_JOBS) -> list[str]:
    """One short line per job (the last ``limit``), then one result value."""
    from .core import api
    from .core.jobs.job import _summary
    from .core.errors import XTError
    rows = api.jobs(last=limit)
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    lines = []
    for row in rows:
        name = f" {row['name']!r}" if row.get("name") else ""
        lines.append(f"  {row['job']}{name} on {row['target']}: {row['status']} ({row['states']})")
    for row in reversed(rows):
        try:
            res = api.results(row["job"])
        except XTError:
            continue
        for run in res:
            value = next(((k, v) for k, v in run.variables.items() if not k.startswith("xt_")),
                         None)
            if value is not None:
                text = repr(value[1])
                text = text if len(text) <= 60 else text[:57] + "..."
                lines.append(f"  result: {run.run} {value[0]} = {text}"
                             + (f" ({_summary(res.job.states())})" if len(res) > 1 else ""))
                return lines
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xt_magic.summary", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run first")
    parser.add_argument("--output-dir", default="executed",
                        help="where the executed copies go (default ./executed)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        try:
            out = execute(path, args.output_dir)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"ran {path}: executed copy in {out}")
    from .core import api
    from .core.errors import XTError
    try:
        ws, store = api.config_get("general.workspace"), api.config_get("xt-services.storage")
        lines = job_lines()
    except XTError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"jobs in workspace {ws} (store {store}):" if lines else f"no jobs in workspace {ws}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
