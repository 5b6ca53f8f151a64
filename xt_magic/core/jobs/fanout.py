"""Per-run store round trips on threads when the store is remote (submit writes, Job reads)."""
from __future__ import annotations

import threading


#: Per-run store round trips (at submit each run's `created` event and ticket, then each run's
#: events read by the Job handle) run on this many threads when the store is remote.
SUBMIT_WORKERS = 16


def _store_workers(store, runs: int) -> int:
    # a local store's reads and writes stay in order on the calling thread: threads only add
    # overhead there (bench/bench_submit.py)
    if not store.remote:
        return 1
    return max(1, min(int(SUBMIT_WORKERS), runs))


class _RunError(Exception):
    """The store work of run ``run`` failed with ``cause``; ``failed`` runs failed in all."""

    def __init__(self, run: str, cause: BaseException, failed: int = 1):
        super().__init__(run, cause)
        self.run, self.cause, self.failed = run, cause, failed


def _each_run(fn, items: list[tuple], workers: int) -> list:
    """``fn(run, ...)`` for each item, in order on this thread when ``workers`` <= 1, else on the
    shared pool's threads (``SUBMIT_WORKERS``); results in item order.

    The first failure stops every call not yet started and waits for those under way; then the
    failure of the earliest run is raised as a ``_RunError``. Ctrl-C does the same and is
    re-raised as it is.
    """
    if workers <= 1:
        out = []
        for item in items:
            try:
                out.append(fn(*item))
            except Exception as err:
                raise _RunError(item[0], err) from err
        return out
    if getattr(_worker, "busy", False):  # called from one of the pool's own calls: no nesting
        return _each_run(fn, items, 1)
    from concurrent.futures import FIRST_EXCEPTION, wait
    pool = _pool()
    futures = []
    try:
        futures = [pool.submit(_call, fn, item) for item in items]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:  # a failure (or Ctrl-C) stops the calls not started; those under way finish
        for f in futures:
            f.cancel()
        wait(futures)
    errors = [(item[0], f.exception()) for item, f in zip(items, futures)
              if not f.cancelled() and f.exception() is not None]
    if errors:
        run, err = errors[0]
        raise _RunError(run, err, len(errors)) from err
    return [f.result() for f in futures]


_worker = threading.local()
_lock = threading.Lock()
_shared = None


def _pool():
    """The threads of every fan-out, started once: a Job looking at a sweep every fraction of a
    second, or a submit, no longer starts (and joins) a new thread per worker each time."""
    global _shared
    with _lock:
        if _shared is None:
            from concurrent.futures import ThreadPoolExecutor
            _shared = ThreadPoolExecutor(max_workers=max(1, int(SUBMIT_WORKERS)),
                                         thread_name_prefix="xt-store")
        return _shared


def _call(fn, item):
    _worker.busy = True
    try:
        return fn(*item)
    finally:
        _worker.busy = False
