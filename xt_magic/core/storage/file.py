"""FileStore: the Store ABC over a local (or shared) directory.

Writes are atomic (temp file + ``os.replace``), ids are allocated with ``O_CREAT|O_EXCL`` and
append-only objects use ``O_APPEND`` so concurrent writers (client, runner, reconciler, several
kernels) never interleave half-lines on a local filesystem.

File modes (docs/security.md "File store modes"): every object and folder is created as ordinary
files are, from the writer's umask (files 0666 & ~umask, folders 0777 & ~umask): 0644 / 0755 with
the usual umask 022, group-writable with 002, private with 077. The runner writes the same way.
"""
from __future__ import annotations

import os
from typing import Iterator

from ...runner.runner import write_atomic
from ..errors import DamagedObject, StoreError
from ..paths import xt_home
from .base import Store, check_path


def default_root() -> str:
    """``$XT_HOME/file_store`` (XT_HOME defaults to ``~/.xt``)."""
    return os.path.join(xt_home(), "file_store")


class FileStore(Store):
    """Objects are files under ``root``; store path ``a/b/c`` is ``root/a/b/c``."""

    kind = "file"

    def __init__(self, root: str):
        self.root = os.path.abspath(os.path.expanduser(os.path.expandvars(root)))
        self._tokens: dict[str, str] = {}  # store path -> file, for change_token
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create file store at {self.root}: {err.strerror}") from err

    @classmethod
    def from_config(cls, name: str, service_cfg: dict, session=None) -> "FileStore":
        """Build from an external-services entry (``path:``; default ``$XT_HOME/file_store``)."""
        path = (service_cfg or {}).get("path") or default_root()
        if not isinstance(path, str):
            raise StoreError(f"external-services.{name}.path must be a directory path")
        return cls(path)

    # -- helpers ---------------------------------------------------------------------------
    def _full(self, path: str) -> str:
        return os.path.join(self.root, *check_path(path).split("/"))

    def _mkparent(self, full: str) -> None:
        os.makedirs(os.path.dirname(full), exist_ok=True)

    def _retry_in_new_dir(self, full: str, op):
        """Run ``op()``; if the parent directory is missing, create it and run it again
        (cheaper than a makedirs before every write when the directory usually exists)."""
        try:
            return op()
        except FileNotFoundError:
            self._mkparent(full)
            return op()

    # -- Store API ---------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        try:
            with open(self._full(path), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise StoreError(f"not found in store: {path}") from None
        except OSError as err:
            raise DamagedObject(f"cannot read {path}: {err.strerror}") from err

    def read_from(self, path: str, offset: int) -> bytes:
        try:
            with open(self._full(path), "rb") as fh:
                fh.seek(offset)
                return fh.read()
        except FileNotFoundError:
            return b""
        except OSError as err:  # a folder or an unreadable file where an object belongs
            raise DamagedObject(f"cannot read {path}: {err.strerror}") from err

    def write_bytes(self, path: str, data: bytes) -> None:
        full = self._full(path)
        try:
            # 0666 & ~umask, as open() gives: the module docstring's one policy
            self._retry_in_new_dir(full, lambda: write_atomic(full, data, mode=0o666))
        except OSError as err:
            raise StoreError(f"cannot write {path}: {err.strerror}") from err

    def create_exclusive(self, path: str, data: bytes) -> bool:
        full = self._full(path)
        try:
            fd = self._retry_in_new_dir(full, lambda: os.open(
                full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            return False
        except OSError as err:
            raise StoreError(f"cannot create {path}: {err.strerror}") from err
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def append(self, path: str, data: bytes) -> None:
        full = self._full(path)
        try:
            fd = self._retry_in_new_dir(full, lambda: os.open(
                full, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666))
            try:
                os.write(fd, data)  # one write(2): concurrent appenders never interleave lines
            finally:
                os.close(fd)
        except OSError as err:
            raise StoreError(f"cannot append to {path}: {err.strerror}") from err

    def download_file(self, path: str, local_file: str) -> None:
        """Copy in chunks (outputs can be larger than memory), atomically replacing the target."""
        import shutil
        import tempfile
        folder = os.path.dirname(os.path.abspath(local_file))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(self._full(path), "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, local_file)
        except BaseException as err:
            _unlink(tmp)
            if isinstance(err, FileNotFoundError):
                raise StoreError(f"not found in store: {path}") from None
            if isinstance(err, OSError):
                raise StoreError(f"cannot download {path}: {err.strerror}") from err
            raise

    def exists(self, path: str) -> bool:
        return os.path.isfile(self._full(path))

    def list(self, prefix: str) -> Iterator[str]:
        prefix = prefix.strip("/")
        base = self._full(prefix) if prefix else self.root
        for folder, dirs, files in os.walk(base):
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for f in files:
                if not f.startswith(".tmp-"):
                    yield f if rel == "." else f"{rel}/{f}"

    def delete(self, path: str) -> None:
        _unlink(self._full(path))

    def change_token(self, path: str) -> tuple | None:
        full = self._tokens.get(path)
        if full is None:  # a Job polls the same runs' events again and again
            if len(self._tokens) > 65536:
                self._tokens.clear()
            full = self._tokens[path] = self._full(path)
        try:  # one stat: an append moves the size, a replacement the inode
            st = os.stat(full)
        except FileNotFoundError:
            return ()
        except OSError:
            return None  # read it: the read names the damage
        return st.st_ino, st.st_size, st.st_mtime_ns

    def local_dir(self) -> str:
        return self.root

    def node_access(self, *, read, write, append, expiry_seconds, read_write=()):
        # nodes share this filesystem: the root is all they need (no credential exists)
        from ..protocol.access import FileAccess
        return FileAccess(self.root)

    def local_path(self, path: str) -> str:
        """Filesystem path of a store object (file store only; used by local tools)."""
        return self._full(path)

    def describe(self) -> str:
        return f"file:{self.root}"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
