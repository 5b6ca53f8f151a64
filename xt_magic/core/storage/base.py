"""The Store ABC: where jobs, runs and snapshots live (file store by default, Azure blob).

Paths are ``/``-separated store paths, e.g. ``ws1/jobs/job3/job.json`` or
``snapshots/<sha256>.zip`` (see docs/architecture.md for the layout). Every store implements the
same operations, so everything above it (jobs, monitor, results) is store-agnostic.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterator

from ..errors import StoreError

ProgressFn = Callable[[int, int], None]  # (bytes_done, bytes_total)


def check_path(path: str) -> str:
    """Reject absolute paths, ``..`` segments and empty segments in a store path."""
    if not path or path.startswith("/") or "\\" in path:
        raise StoreError(f"bad store path {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"bad store path {path!r}")
    return path


class Store(ABC):
    """A flat namespace of byte objects addressed by store paths."""

    kind: str = ""
    #: Per-run round trips are slow (network): the jobs layer runs them on threads.
    remote: bool = False

    @abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """Whole object; StoreError (not KeyError) if missing."""

    @abstractmethod
    def read_from(self, path: str, offset: int) -> bytes:
        """Bytes from ``offset`` to the end (b"" if none or missing): cheap incremental tails."""

    @abstractmethod
    def write_bytes(self, path: str, data: bytes) -> None:
        """Create or replace an object atomically (readers see old or new, never half)."""

    @abstractmethod
    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create only if absent; True if this call created it. Used for atomic id allocation."""

    @abstractmethod
    def append(self, path: str, data: bytes) -> None:
        """Append to an append-only object (events, console, metrics), creating it if needed."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Paths of all objects under ``prefix`` (recursive), in any order."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Delete one object; no error if it is missing."""

    def upload_file(self, path: str, local_file: str, progress: ProgressFn | None = None) -> None:
        with open(local_file, "rb") as fh:
            data = fh.read()
        self.write_bytes(path, data)
        if progress:
            progress(len(data), len(data))

    def download_file(self, path: str, local_file: str) -> None:
        import os
        from ...runner.runner import write_atomic
        data = self.read_bytes(path)
        os.makedirs(os.path.dirname(os.path.abspath(local_file)), exist_ok=True)
        write_atomic(local_file, data, mode=0o600)

    @abstractmethod
    def node_access(self, *, read: list[str], write: list[str], append: list[str],
                    expiry_seconds: int, read_write: list[str] = ()):
        """A :class:`~xt_magic.core.protocol.access.NodeAccess` reaching exactly these paths.

        File store: ``FileAccess(root)`` (the node shares the filesystem). Blob store:
        ``UrlAccess`` with a read SAS for each ``read`` path, a create/write SAS for each ``write``
        path, an add/create SAS for each ``append`` path (append blobs), and read plus
        create/write for each ``read_write`` path (a run's checkpoint). Never an account
        key or a credential. It goes to nodes only in a launch secret, never into the store.
        """

    def append_new(self, path: str, data: bytes) -> None:
        """Append to an object that does not exist yet (a store may save a round trip)."""
        self.append(path, data)

    def change_token(self, path: str) -> tuple | None:
        """A cheap ``(identity, size, version)`` of an object that changes whenever it does
        (``()``: missing), or None when only reading it tells (then it is read)."""
        return None

    def change_tokens(self, paths: list[str]) -> dict[str, tuple | None]:
        """:meth:`change_token` of many objects at once (a remote store lists them in one
        request rather than asking once per object)."""
        return {path: self.change_token(path) for path in paths}

    def local_dir(self) -> str | None:
        """The directory holding the store's objects on this machine, if it has one."""
        return None

    def identity(self) -> str:
        """What tells this store apart from every other (a job key is bound to it)."""
        return self.describe()

    def describe(self) -> str:
        return self.kind
