"""Key Vault through the REAL SecretClient (401 Bearer challenge, then token) against the local
vault server: secrets listed at login (names only), $vault resolution from XT's JSON xt-keys
secret and from one secret per service, masking, logout, and a blob store keyed by $vault."""
from __future__ import annotations

import json

import pytest

from xt_magic.core.auth import service, vault
from xt_magic.core.errors import AuthError
from xt_magic.core.session import get_session

STORE_KEY = "Zm9vYmFyLWNhbmFyeS1zdG9yZS1rZXktNzc3"  # a fake, recognisable account key


def write_config(azurite=None, container="c1", extra=""):
    store = ""
    if azurite is not None:
        store = azurite.store_entry(container, "$vault")
    with open("xt_config.yaml", "w") as fh:
        fh.write("external-services:\n"
                 "  teamvault: {type: vault, url: 'https://xtteamvault.vault.azure.net/'}\n"
                 "  registry1: {type: registry, login-server: r.example, username: u, "
                 "password: $vault}\n" + store +
                 "xt-services: {vault: teamvault" + (", storage: teamstore" if store else "") +
                 "}\n" + extra)


def login(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch)
    return service.login(get_session(), method="service-principal")


def test_login_lists_secret_names_through_the_challenge(aad_vault, monkeypatch):
    aad_vault.secrets.update({"xt-keys": json.dumps({"teamstore": STORE_KEY}),
                              "registry1-password": "pw-canary-1234"})
    write_config()
    status = login(aad_vault, monkeypatch)
    assert status.vault == "https://xtteamvault.vault.azure.net/"
    assert status.secrets == ["registry1-password", "xt-keys"] and status.vault_error is None
    # SecretClient first sent no token (challenge), then a bearer token for vault.azure.net
    assert aad_vault.vault_requests[:2] == ["GET /secrets", "GET /secrets"]
    assert any(r.get("scope") == "https://vault.azure.net/.default"
               for r in aad_vault.token_requests)
    shown = str(status) + repr(status) + repr(get_session().auth)
    assert STORE_KEY not in shown and "pw-canary-1234" not in shown


def test_resolve_from_xt_keys_and_per_service_secrets(aad_vault, monkeypatch):
    aad_vault.secrets.update({"xt-keys": json.dumps({"teamstore": STORE_KEY}),
                              "registry1-password": "pw-canary-1234", "teamstore": "shadowed"})
    write_config()
    login(aad_vault, monkeypatch)
    session = get_session()
    cfg = session.config()
    assert vault.resolve(session, "teamstore") == STORE_KEY  # xt-keys wins (XT's layout)
    assert vault.resolve_secret(session, cfg, "external-services.registry1.password") == \
        "pw-canary-1234"
    ref = cfg.get("external-services.registry1.password")
    assert type(ref).__name__ == "VaultRef" and "pw-canary" not in repr(ref) + str(ref)
    assert vault.resolve_value(session, ref, "registry1", "password") == "pw-canary-1234"
    assert vault.resolve_value(session, "plain", "x") == "plain"
    gets = [r for r in aad_vault.vault_requests if r == "GET /secrets/registry1-password"]
    vault.resolve(session, "registry1", "password")
    assert [r for r in aad_vault.vault_requests if r == "GET /secrets/registry1-password"] == gets


def test_per_service_secret_and_missing_secret_error(aad_vault, monkeypatch):
    aad_vault.secrets["teamstore"] = STORE_KEY
    write_config()
    login(aad_vault, monkeypatch)
    session = get_session()
    assert vault.resolve(session, "teamstore") == STORE_KEY
    assert vault.secret_names("my_store", "key") == ["my-store"]
    assert vault.secret_names("reg", "password") == ["reg-password"]
    with pytest.raises(AuthError) as info:
        vault.resolve(session, "registry1", "password")
    text = str(info.value)
    assert "registry1-password" in text and "xt-keys" in text and STORE_KEY not in text
    assert STORE_KEY not in str(session.config().data) + repr(session.auth)


def test_not_logged_in_and_logout_forgets_secrets(aad_vault, monkeypatch):
    aad_vault.secrets["teamstore"] = STORE_KEY
    write_config()
    with pytest.raises(AuthError, match="needs a login"):
        vault.resolve(get_session(), "teamstore")
    login(aad_vault, monkeypatch)
    assert vault.resolve(get_session(), "teamstore") == STORE_KEY
    cache = get_session().auth
    service.logout(get_session())
    assert cache.secrets.names() == [] and cache.vault_client is None
    with pytest.raises(AuthError, match="needs a login"):
        vault.resolve(get_session(), "teamstore")


def test_vault_failure_does_not_fail_login(aad_vault, monkeypatch):
    write_config()
    aad_vault.env(monkeypatch)
    aad_vault.vault_forbidden = True
    status = service.login(get_session(), method="service-principal")
    assert status.logged_in and "HTTP 403" in status.vault_error
    assert "vault not read" in str(status)


@pytest.mark.azurite
def test_blob_store_with_vault_account_key(aad_vault, monkeypatch, azurite, azurite_container):
    from xt_magic.core.storage import get_store
    aad_vault.secrets["xt-keys"] = json.dumps({"teamstore": azurite.key})
    write_config(azurite, azurite_container)
    with pytest.raises(AuthError, match="needs a login"):
        get_store(get_session())
    login(aad_vault, monkeypatch)
    store = get_store(get_session())
    assert type(store).__name__ == "AzureBlobStore"
    store.write_bytes("ws1/a.txt", b"hello")
    assert store.read_bytes("ws1/a.txt") == b"hello"
    assert azurite.key not in repr(store) + store.describe()
    access = store.node_access(read=["ws1/a.txt"], write=[], append=[], expiry_seconds=60)
    assert azurite.key not in json.dumps(access.to_json())
    service.logout(get_session())  # drops the store built with the vault key
    with pytest.raises(AuthError, match="needs a login"):
        get_store(get_session())


def test_vault_ref_without_a_vault_service(aad_vault, monkeypatch):
    login(aad_vault, monkeypatch)  # no xt_config.yaml: xt-services.vault is null
    assert service.whoami(get_session()).vault is None
    with pytest.raises(AuthError, match="no vault configured"):
        vault.resolve(get_session(), "teamstore")


def test_xt_keys_read_on_first_use_when_listing_was_refused(aad_vault, monkeypatch):
    aad_vault.secrets["xt-keys"] = json.dumps({"teamstore": {"key": STORE_KEY}})
    write_config()
    aad_vault.env(monkeypatch)
    real = aad_vault.httpd.RequestHandlerClass._vault

    def no_list(handler, method, parts, body):  # "get" but no "list" permission
        if method == "GET" and len(parts) == 1:
            return handler._send(403, {"error": {"code": "Forbidden", "message": "no list"}})
        return real(handler, method, parts, body)
    monkeypatch.setattr(aad_vault.httpd.RequestHandlerClass, "_vault", no_list)
    status = service.login(get_session(), method="service-principal")
    assert "HTTP 403" in status.vault_error
    assert vault.resolve(get_session(), "teamstore") == STORE_KEY
