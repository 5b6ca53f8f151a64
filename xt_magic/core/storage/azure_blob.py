"""Azure Blob store: the Store ABC over one blob container (azure-storage-blob v12).

Config (an ``external-services`` entry; XT's ``provider: azure-blob-21`` works unchanged)::

    teamstore:
      type: storage
      provider: azure-blob-21
      name: teamstoreacct            # storage account name
      key: $vault                    # optional: account key or connection string (from Key Vault)
      container: xt-store            # optional (default xt-store)
      url: https://...               # optional account URL (default https://NAME.blob.core.windows.net)
      max-concurrency: 8             # optional: parallel block uploads/downloads

Without ``key`` the store uses the ``%xt_login`` credential (Azure RBAC: "Storage Blob Data
Contributor" on the account). Store paths map 1:1 to blob names, so the layout is the file store's.
Events, console and metrics are append blobs. Jobs never get the key or the credential: they get
per-blob SAS URLs (``node_access``) for exactly the operation each path needs.
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from typing import Iterator

from ..errors import AuthError, ConfigError, StoreError
from .base import ProgressFn, Store, check_path

DEFAULT_CONTAINER = "xt-store"
BLOCK_SIZE = 8 * 1024 * 1024          # parallel upload block size
SINGLE_PUT = 8 * 1024 * 1024          # above this, upload in parallel blocks
PROGRESS_BAR_MIN = 16 * 1024 * 1024   # default tqdm bar only for big files
MAX_SAS_SECONDS = 7 * 24 * 3600       # user delegation keys live at most 7 days
KEY_HEADROOM = 3600                   # a user delegation key outlives the SAS it signs by this
LIST_TOKENS_MIN = 4                   # fewer objects than this: reading each is cheaper than a listing
LIST_TOKENS_PER_PATH = 50             # a listing stops after this many entries per object asked for
PERMISSIONS = {"read": "r", "write": "cw", "append": "acw", "read_write": "rcw"}


def _is_connection_string(value: str) -> bool:
    return "AccountKey=" in value or "SharedAccessSignature=" in value or \
        value.strip().startswith("UseDevelopmentStorage")


def _translate(err, what: str, path: str = ""):
    """An SDK error as a StoreError/AuthError (status and code kept, never a credential)."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    where = f" {path}" if path else ""
    if isinstance(err, ClientAuthenticationError):
        return AuthError(f"blob store refused credentials while trying to {what}{where}",
                         hint="run %xt_login, or check the storage key / RBAC role "
                              "'Storage Blob Data Contributor'")
    if isinstance(err, HttpResponseError):
        code = getattr(err, "error_code", None) or ""
        code = getattr(code, "value", code)  # StorageErrorCode enum -> "AuthenticationFailed"
        return StoreError(f"blob store: {what}{where} failed: HTTP {err.status_code} {code}".strip())
    return StoreError(f"blob store: {what}{where} failed: {type(err).__name__}")


class AzureBlobStore(Store):
    """Store over one Azure blob container (see module docstring for config)."""

    kind = "azure-blob"
    remote = True

    def __init__(self, service_client, container: str, *, account_key: str | None = None,
                 aad: bool = False, max_concurrency: int = 8):
        self._service = service_client
        self._container = service_client.get_container_client(container)
        self._account_key = account_key  # only for signing SAS; never in a ticket or repr
        self._aad = aad
        self._concurrency = max_concurrency
        self._ensured = False
        self._lock = threading.Lock()
        self._delegation = None  # (key, expiry)

    def __repr__(self) -> str:
        return f"<AzureBlobStore {self.describe()}>"

    def describe(self) -> str:
        return f"azure-blob {self._service.account_name}/{self._container.container_name}"

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, service_cfg: dict, session) -> "AzureBlobStore":
        from azure.storage.blob import BlobServiceClient
        from ..auth import vault
        where = f"external-services.{name}"
        container = service_cfg.get("container") or DEFAULT_CONTAINER
        account = service_cfg.get("name")
        url = service_cfg.get("url") or (account and f"https://{account}.blob.core.windows.net")
        concurrency = int(service_cfg.get("max-concurrency") or 8)
        opts = dict(max_block_size=BLOCK_SIZE, max_single_put_size=SINGLE_PUT,
                    retry_total=5)
        secret = None
        for field in ("connection-string", "key"):
            if service_cfg.get(field):
                secret = vault.resolve_value(session, service_cfg[field], name, field)
                break
        if secret and _is_connection_string(secret):
            try:
                client = BlobServiceClient.from_connection_string(secret, **opts)
            except ValueError:  # the SDK's message may quote the string: never pass it on
                raise ConfigError("the storage connection string is malformed",
                                  key=f"{where}.connection-string",
                                  hint="copy it again from the storage account's Access keys") \
                    from None
            key = client.credential.account_key if hasattr(client.credential, "account_key") \
                else None
            return cls(client, container, account_key=key, max_concurrency=concurrency)
        if not url:
            raise ConfigError("blob store needs the storage account name", key=f"{where}.name")
        if secret:
            from azure.core.credentials import AzureNamedKeyCredential
            if not account:
                raise ConfigError("an account key needs the account name", key=f"{where}.name")
            client = BlobServiceClient(url, credential=AzureNamedKeyCredential(account, secret),
                                       **opts)
            return cls(client, container, account_key=secret, max_concurrency=concurrency)
        from ..auth.service import credential
        client = BlobServiceClient(url, credential=credential(session), **opts)
        return cls(client, container, aad=True, max_concurrency=concurrency)

    # -- helpers -------------------------------------------------------------------------------
    def _blob(self, path: str):
        return self._container.get_blob_client(check_path(path))

    def _ensure_container(self) -> None:
        if self._ensured:
            return
        from azure.core.exceptions import ResourceExistsError
        try:
            self._container.create_container()
        except ResourceExistsError:
            pass
        except Exception as err:  # noqa: BLE001 - translated
            raise _translate(err, "create container", self._container.container_name) from err
        self._ensured = True

    def _write(self, what: str, path: str, fn):
        """Run a write; create the container once if it is missing, then retry."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        try:
            return fn()
        except ResourceNotFoundError as err:
            if getattr(err, "error_code", None) != "ContainerNotFound":
                raise _translate(err, what, path) from err
        except HttpResponseError as err:
            raise _translate(err, what, path) from err
        self._ensure_container()
        try:
            return fn()
        except HttpResponseError as err:
            raise _translate(err, what, path) from err

    # -- Store ABC ---------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        try:
            return self._blob(path).download_blob(max_concurrency=self._concurrency).readall()
        except ResourceNotFoundError as err:
            raise StoreError(f"not found in blob store: {path}") from err
        except HttpResponseError as err:
            raise _translate(err, "read", path) from err

    def read_from(self, path: str, offset: int) -> bytes:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        try:
            return self._blob(path).download_blob(offset=offset).readall()
        except ResourceNotFoundError:
            return b""
        except HttpResponseError as err:
            if err.status_code == 416:  # offset at or past the end
                return b""
            raise _translate(err, "read", path) from err

    def write_bytes(self, path: str, data: bytes) -> None:
        blob = self._blob(path)
        self._write("write", path, lambda: blob.upload_blob(
            data, overwrite=True, max_concurrency=self._concurrency))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        blob = self._blob(path)
        try:
            self._write("create", path, lambda: blob.upload_blob(
                data, overwrite=True, match_condition=MatchConditions.IfMissing))
            return True
        except StoreError as err:
            cause = err.__cause__
            if isinstance(cause, (ResourceExistsError, ResourceModifiedError)) or \
                    getattr(cause, "status_code", None) in (409, 412):
                return False
            raise

    def append(self, path: str, data: bytes) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        try:
            self._blob(path).append_block(data)
            return
        except ResourceNotFoundError:
            pass
        except HttpResponseError as err:
            raise _translate(err, "append", path) from err
        self.append_new(path, data)

    def append_new(self, path: str, data: bytes) -> None:
        """``append`` for a blob expected not to exist yet (a new run's events): create it first,
        then append: 2 round trips where ``append`` would take 3 (404, create, append). Still
        right if it does exist."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        blob = self._blob(path)

        def create():
            try:
                blob.create_append_blob(match_condition=_if_missing())
            except ResourceExistsError:
                pass  # another writer created it first
        self._write("create append blob", path, create)
        try:
            blob.append_block(data)
        except HttpResponseError as err:
            raise _translate(err, "append", path) from err

    def exists(self, path: str) -> bool:
        from azure.core.exceptions import HttpResponseError
        try:
            return self._blob(path).exists()
        except HttpResponseError as err:
            raise _translate(err, "check", path) from err

    def list(self, prefix: str) -> Iterator[str]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        prefix = prefix.strip("/")
        start = prefix + "/" if prefix else None
        try:
            yield from self._container.list_blob_names(name_starts_with=start)
        except ResourceNotFoundError:
            return
        except HttpResponseError as err:
            raise _translate(err, "list", prefix) from err

    def change_tokens(self, paths: list[str]) -> dict[str, tuple | None]:
        """One listing of the paths' common prefix instead of a request per blob: a Job polling
        a 50-run sweep asks once per look, not 50 times. ``(creation time, size, etag)``: an
        append moves the size and etag, a replacement the creation time."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        if len(paths) < LIST_TOKENS_MIN:
            return dict.fromkeys(paths)  # None: each is read, which tells as much
        wanted, tokens = set(paths), {}
        limit = LIST_TOKENS_PER_PATH * len(paths)
        last, cut = None, False
        try:  # the common prefix may hold far more than the paths (other runs' outputs): bounded
            for n, blob in enumerate(self._container.list_blobs(
                    name_starts_with=os.path.commonprefix(paths),
                    results_per_page=min(5000, limit))):
                if n >= limit:
                    cut = True
                    break
                last = blob.name
                if blob.name in wanted:
                    tokens[blob.name] = (blob.creation_time, blob.size, blob.etag)
        except ResourceNotFoundError:
            last = None
        except HttpResponseError:
            return dict.fromkeys(paths)  # the reads name what is wrong
        for path in paths:  # listed in name order: a path before where it stopped is missing
            if path not in tokens:
                tokens[path] = None if cut and path > last else ()
        return tokens

    def delete(self, path: str) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        try:
            self._blob(path).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            pass
        except HttpResponseError as err:
            raise _translate(err, "delete", path) from err

    def upload_file(self, path: str, local_file: str, progress: ProgressFn | None = None) -> None:
        """Upload in parallel blocks; ``progress(done, total)`` after each block (default: a
        tqdm.auto bar for big files when tqdm is installed)."""
        size = os.path.getsize(local_file)
        bar = None
        if progress is None and size >= PROGRESS_BAR_MIN:
            bar, progress = _tqdm_progress(size, os.path.basename(local_file))
        hook = (lambda done, total: progress(done, total or size)) if progress else None
        blob = self._blob(path)
        try:
            with open(local_file, "rb") as fh:
                self._write("upload", path, lambda: (fh.seek(0), blob.upload_blob(
                    fh, length=size, overwrite=True, max_concurrency=self._concurrency,
                    progress_hook=hook)))
        finally:
            if bar is not None:
                bar.close()

    def download_file(self, path: str, local_file: str) -> None:
        import tempfile
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        folder = os.path.dirname(os.path.abspath(local_file))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                self._blob(path).download_blob(max_concurrency=self._concurrency).readinto(fh)
            os.replace(tmp, local_file)
        except ResourceNotFoundError as err:
            raise StoreError(f"not found in blob store: {path}") from err
        except HttpResponseError as err:
            raise _translate(err, "download", path) from err
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- SAS for runners ---------------------------------------------------------------------------
    def identity(self) -> str:
        return (f"azure-blob:{self._service.primary_hostname}/{self._service.account_name}/"
                f"{self._container.container_name}")

    def node_access(self, *, read: list[str], write: list[str], append: list[str],
                    expiry_seconds: int, read_write: list[str] = ()):
        """Per-blob SAS URLs: read -> ``r``, write -> ``cw``, append -> ``acw``, read_write ->
        ``rcw`` (a run's checkpoint, read back after a requeue); nothing else.

        User-delegation SAS when the store uses the login credential (AAD), account-key SAS
        otherwise. Expiry is capped at 7 days (the user delegation key's limit).
        """
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas
        now = _dt.datetime.now(_dt.timezone.utc)
        start = now - _dt.timedelta(minutes=5)  # tolerate clock skew on nodes
        expiry = now + _dt.timedelta(seconds=min(max(int(expiry_seconds), 60), MAX_SAS_SECONDS))
        if write or append or read_write:
            self._ensure_container()
        signing = {"account_key": self._account_key}
        if self._aad:
            # leave the key headroom, so the next runs of a sweep reuse it (one fetch per job)
            expiry = min(expiry, now + _dt.timedelta(seconds=MAX_SAS_SECONDS - KEY_HEADROOM))
            signing = {"user_delegation_key": self._delegation_key(
                start, expiry, now + _dt.timedelta(seconds=MAX_SAS_SECONDS))}
        elif not self._account_key:
            raise StoreError("cannot sign SAS URLs: the blob store has no account key",
                             hint="configure the storage key, or use %xt_login (RBAC)")
        perms: dict[str, str] = {}  # a path named under two operations gets both
        for op, paths in (("read", read), ("write", write), ("append", append),
                          ("read_write", read_write)):
            for path in paths:
                perms[path] = perms.get(path, "") + PERMISSIONS[op]
        urls = {}
        for path, perm in perms.items():
            blob = self._blob(path)
            sas = generate_blob_sas(
                self._service.account_name, self._container.container_name, blob.blob_name,
                permission=BlobSasPermissions.from_string(perm),
                start=start, expiry=expiry, **signing)
            urls[path] = f"{blob.url}?{sas}"
        from ..protocol.access import UrlAccess
        return UrlAccess(urls)

    def _delegation_key(self, start, expiry, latest):
        """A user delegation key valid until at least ``expiry``: the cached one while it lasts,
        else a new one valid until ``KEY_HEADROOM`` after ``expiry`` (at most ``latest``)."""
        with self._lock:
            if self._delegation is None or self._delegation[1] < expiry:
                from azure.core.exceptions import HttpResponseError
                expiry = min(expiry + _dt.timedelta(seconds=KEY_HEADROOM), latest)
                try:
                    key = self._service.get_user_delegation_key(start, expiry)
                except HttpResponseError as err:
                    raise _translate(err, "get a user delegation key") from err
                self._delegation = (key, expiry)
            return self._delegation[0]


def _if_missing():
    from azure.core import MatchConditions
    return MatchConditions.IfMissing


def _tqdm_progress(total: int, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)
    return bar, update
