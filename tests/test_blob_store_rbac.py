"""The blob store on the %xt_login credential (RBAC, no key): Azurite over HTTPS in OAuth mode
accepts the local AAD's bearer tokens; runners get user-delegation SAS URLs."""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import pytest

from xt_magic.core.auth import service
from xt_magic.core.errors import AuthError
from xt_magic.core.session import get_session

pytestmark = pytest.mark.azurite


@pytest.fixture
def oauth_azurite(aad_vault, tmp_path):
    from conftest import need
    from fixtures.azurite import azurite_binary, start_azurite, stop
    need(azurite_binary() is not None, "azurite")
    folder = tmp_path / "azurite-oauth"
    folder.mkdir()
    proc, info = start_azurite(str(folder), ["--oauth", "basic", "--cert", aad_vault.cert,
                                             "--key", aad_vault.key], scheme="https")
    yield info
    stop(proc)


def _get(url: str, cafile: str):
    import ssl
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_rbac_store_and_user_delegation_sas(aad_vault, oauth_azurite, monkeypatch):
    from xt_magic.core.storage.azure_blob import AzureBlobStore
    aad_vault.env(monkeypatch)
    cfg = {"type": "storage", "provider": "azure-blob-21", "name": oauth_azurite.account,
           "url": oauth_azurite.blob_endpoint, "container": "rbac"}
    with pytest.raises(AuthError, match="not logged in"):
        AzureBlobStore.from_config("teamstore", cfg, get_session())
    service.login(get_session(), method="service-principal")
    store = AzureBlobStore.from_config("teamstore", cfg, get_session())
    store.write_bytes("ws1/jobs/job1/bundle/cell.py", b"print(2)")
    assert store.read_bytes("ws1/jobs/job1/bundle/cell.py") == b"print(2)"
    assert any(r.get("scope") == "https://storage.azure.com/.default"
               for r in aad_vault.token_requests)
    access = store.node_access(read=["ws1/jobs/job1/bundle/cell.py"], write=[], append=[],
                               expiry_seconds=3600)
    url = access.urls["ws1/jobs/job1/bundle/cell.py"]
    query = dict(urllib.parse.parse_qsl(url.split("?", 1)[1]))
    # a user-delegation SAS (signed by a key Azurite issued to the logged-in identity), read only,
    # for exactly this blob
    assert query["sp"] == "r" and query["sr"] == "b" and query["sktid"] == aad_vault.tenant
    assert query["skoid"] and query["sks"] == "b" and "sig" in query
    assert url.split("?")[0].endswith("/rbac/ws1/jobs/job1/bundle/cell.py")
    # Azurite 3.35 (the last release for Node 20) predates the SAS string-to-sign that
    # azure-storage-blob 12.31 uses for user-delegation SAS (sv=2026-10-06 adds the signed
    # request headers/query lines), so it refuses every such SAS, valid or not; account-key SAS
    # are checked against Azurite in test_blob_store.py. Here: a tampered one is refused.
    tampered = url.replace("sp=r&", "sp=rw&")
    assert _get(tampered, aad_vault.cert)[0] == 403
    assert store.read_bytes("ws1/jobs/job1/bundle/cell.py") == b"print(2)"
