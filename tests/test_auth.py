"""%xt_login / %xt_logout: real azure-identity credentials against a local Azure AD (HTTPS),
the kernel-session token cache (expiry, refresh, logout) and failure reporting."""
from __future__ import annotations

import io
import re

import pytest

from xt_magic.core.auth import service
from xt_magic.core.auth.cache import AuthCache, SessionCredential
from xt_magic.core.errors import AuthError
from xt_magic.core.session import get_session


def test_service_principal_login_then_second_login_is_a_noop(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch)
    status = service.login(get_session(), method="service-principal")
    assert status.logged_in and not status.already
    assert status.who == f"app {aad_vault.client_id}" and status.tenant == aad_vault.tenant
    assert status.method == "service-principal"
    requests = len(aad_vault.token_requests)
    again = service.login(get_session(), method="device-code")
    assert again.already and "already logged in as app" in str(again)
    assert len(aad_vault.token_requests) == requests  # no new sign-in
    assert aad_vault.client_secret not in repr(get_session().auth) + str(again)


def test_auto_uses_the_environment_first(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch)
    status = service.login(get_session())  # general.authentication defaults to auto
    assert status.method == "environment" and status.who.startswith("app ")


def test_device_code_is_shown_in_output_not_prompted(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch, service_principal=False)

    class Notebook(io.StringIO):  # the "user" reads the cell output and signs in
        def write(self, text):
            for code in re.findall(r"enter the code (\w+)", text):
                aad_vault.approve(code)
            return super().write(text)
    out = Notebook()
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("input() called in a kernel"))
    status = service.login(get_session(), method="device-code", tenant=aad_vault.tenant, out=out)
    assert "microsoft.com/devicelogin" in out.getvalue()
    assert status.who == "ada@contoso.example" and status.method == "device-code"
    assert "logged in as ada@contoso.example" in out.getvalue()


def test_device_code_callback_for_widgets(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch, service_principal=False)
    shown = []

    def callback(uri, code, expires_on):
        shown.append((uri, code))
        aad_vault.approve(code)
    status = service.login(get_session(), method="device-code", tenant=aad_vault.tenant,
                           device_code_callback=callback)
    assert shown and shown[0][0].startswith("https://") and status.logged_in


def test_failures_name_every_method_and_the_fix(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch, service_principal=False)
    # managed identity: an App Service-style endpoint on a closed loopback port (never IMDS)
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "x")
    monkeypatch.setenv("PATH", "/nonexistent")  # no Azure CLI
    with pytest.raises(AuthError) as info:
        service.login(get_session(), tenant="00000000-0000-4000-8000-000000000000")
    text = str(info.value)
    for method in ("environment", "managed-identity", "cli", "device-code"):
        assert f"- {method}: " in text
    assert "az login" in text and "AZURE_CLIENT_SECRET" in text
    assert text.endswith("pick another method with method=M")  # %xt_login says --method M
    assert get_session().auth is None


def test_bad_secret_is_reported_without_the_secret(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong-secret-value-123")
    with pytest.raises(AuthError) as info:
        service.login(get_session(), method="service-principal")
    assert "service-principal" in str(info.value) and "AADSTS7000215" in str(info.value)
    assert "wrong-secret-value-123" not in str(info.value)


def test_unknown_method():
    with pytest.raises(AuthError, match="unknown login method"):
        service.login(get_session(), method="password")


def test_short_lived_tokens_are_refreshed_before_expiry(aad_vault, monkeypatch):
    aad_vault.env(monkeypatch)
    aad_vault.token_lifetime = 200  # under the 300 s refresh margin: always refreshed
    service.login(get_session(), method="service-principal")
    cred = service.credential(get_session())
    first = cred.get_token("https://storage.azure.com/.default")
    second = cred.get_token("https://storage.azure.com/.default")
    assert first.token != second.token
    aad_vault.token_lifetime = 3600
    third = cred.get_token("https://vault.azure.net/.default")
    assert cred.get_token("https://vault.azure.net/.default").token == third.token


class FakeCredential:
    def __init__(self):
        self.calls, self.closed = [], False

    def get_token(self, *scopes, **kw):
        from azure.core.credentials import AccessToken
        self.calls.append(scopes)
        return AccessToken(f"tok{len(self.calls)}", int(self.now) + 3600)

    def close(self):
        self.closed = True


def test_cache_expiry_refresh_and_logout():
    clock = [1000.0]
    fake = FakeCredential()
    fake.now = clock[0]
    cred = SessionCredential(fake, clock=lambda: clock[0])
    assert cred.get_token("s").token == "tok1"
    clock[0] += 3600 - 301  # still more than the margin left
    assert cred.get_token("s").token == "tok1"
    clock[0] += 2  # inside the margin: refreshed
    fake.now = clock[0]
    assert cred.get_token("s").token == "tok2"
    assert cred.get_token("other").token == "tok3"  # per scope
    assert cred.get_token("s", claims='{"x":1}').token == "tok4"  # claims challenge bypasses

    session = get_session()
    cache = AuthCache(fake, "cli", "t1", "ada")
    cache.secrets.set("teamstore", "canary-value-42")
    session.auth = cache
    assert "canary-value-42" not in repr(cache) + repr(cache.secrets)
    assert cache.scrub("key canary-value-42 leaked") == "key •••• leaked"
    assert service.whoami(session).who == "ada"
    assert service.logout(session) == "logged out ada"
    assert session.auth is None and fake.closed and cache.secrets.names() == []
    assert not service.whoami(session).logged_in
    assert service.logout(session) == "not logged in"
    with pytest.raises(AuthError, match="not logged in"):
        service.credential(session)


def test_token_cache_persistence_is_off_by_default():
    session = get_session()
    assert service._persistence(session.config()) == {}
    session.values["general.azure-token-cache"] = True
    opts = service._persistence(session.config())["cache_persistence_options"]
    assert type(opts).__name__ == "TokenCachePersistenceOptions"


def test_magics_login_logout(ip, aad_vault, monkeypatch):
    aad_vault.env(monkeypatch)
    status = ip.run_line_magic("xt_login", "--method service-principal")
    assert status.logged_in and "logged in as app" in str(status)
    assert ip.run_line_magic("xt_logout", "").startswith("logged out app")
    assert get_session().auth is None


def test_magic_status_flag(ip):
    status = ip.run_line_magic("xt_login", "--status")
    assert not status.logged_in and "not logged in" in str(status)
    with pytest.raises(Exception, match="xt_login"):
        ip.run_line_magic("xt_login", "--method")  # usage error: one line, no SystemExit


def test_service_principal_with_certificate(aad_vault, monkeypatch, tmp_path):
    import datetime as dt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "xt-sp")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = tmp_path / "sp.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + cert.public_bytes(serialization.Encoding.PEM))
    aad_vault.env(monkeypatch)
    monkeypatch.delenv("AZURE_CLIENT_SECRET")
    monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(pem))
    status = service.login(get_session(), method="service-principal")
    assert status.who == f"app {aad_vault.client_id}"
    assert any(r.get("client_assertion_type", "").endswith("jwt-bearer")
               for r in aad_vault.token_requests)
    assert type(get_session().auth.credential._credential).__name__ == "CertificateCredential"
