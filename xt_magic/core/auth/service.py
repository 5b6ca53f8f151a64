"""``%xt_login`` / ``%xt_logout`` / whoami: azure-identity credentials cached per kernel session.

Methods (``general.authentication``, overridden by ``%xt_login --method``):

- ``auto``: environment, managed identity, Azure CLI, then device code (interactive; works for
  remote kernels too, the code is shown in the cell output)
- ``browser`` (InteractiveBrowserCredential), ``device-code`` (DeviceCodeCredential), ``cli``
  (AzureCliCredential), ``managed-identity`` (ManagedIdentityCredential, client id from
  ``AZURE_CLIENT_ID`` or ``general.azure-client-id``), ``service-principal`` (ClientSecretCredential
  or CertificateCredential from ``AZURE_CLIENT_ID`` + ``AZURE_CLIENT_SECRET`` /
  ``AZURE_CLIENT_CERTIFICATE_PATH``, or ``general.azure-client-id`` +
  ``general.azure-client-certificate``).

The tenant is ``general.azure-tenant-id`` (or ``--tenant``). Tokens live in memory; the
azure-identity encrypted token cache is used only when ``general.azure-token-cache`` is true.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from ..errors import AuthError, require
from ..naming import assign
from .cache import AuthCache, identity_from_claims, token_claims

LOGIN_SCOPE = "https://management.azure.com/.default"
METHODS = ("auto", "browser", "device-code", "cli", "service-principal", "managed-identity")
AUTO_CHAIN = ("environment", "managed-identity", "cli", "device-code")
FIXES = {
    "environment": "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET "
                   "(or AZURE_CLIENT_CERTIFICATE_PATH)",
    "managed-identity": "only works on an Azure VM / Batch node with a managed identity",
    "cli": "install the Azure CLI and run `az login`",
    "device-code": "open the URL shown, enter the code, and finish signing in; "
                   "check general.azure-tenant-id",
    "browser": "needs a browser on the kernel's machine; on a remote kernel use "
               "the device-code method",
    "service-principal": "set AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or "
                         "AZURE_CLIENT_CERTIFICATE_PATH (tenant: general.azure-tenant-id)",
}

DeviceCodeCallback = Callable[[str, str, object], None]  # (verification_uri, user_code, expires_on)


@dataclass
class LoginStatus:
    """Who is logged in; what a login panel or ``%xt_login`` shows. Holds no secret."""
    who: str | None
    tenant: str | None
    method: str | None
    vault: str | None = None
    secrets: list[str] = field(default_factory=list)
    vault_error: str | None = None
    already: bool = False
    logged_in: bool = True

    def __str__(self) -> str:
        if not self.logged_in:
            return "not logged in (run %xt_login)"
        head = "already logged in" if self.already else "logged in"
        lines = [f"{head} as {self.who} (tenant {self.tenant or 'default'}, method {self.method})"]
        if self.vault:
            names = ", ".join(self.secrets) if self.secrets else "none"
            lines.append(f"vault {self.vault}: secrets {names}")
        if self.vault_error:
            lines.append(f"vault not read: {self.vault_error}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


def _default_device_callback(out) -> DeviceCodeCallback:
    def show(uri: str, code: str, expires_on) -> None:
        print(f"To sign in, open {uri} and enter the code {code}", file=out or sys.stdout,
              flush=True)
    return show


def _persistence(cfg):
    if not cfg.get("general.azure-token-cache", False):
        return {}
    from azure.identity import TokenCachePersistenceOptions
    return {"cache_persistence_options": TokenCachePersistenceOptions(name="xt_magic")}


PUBLIC_AUTHORITIES = ("login.microsoftonline.com", "login.chinacloudapi.cn",
                      "login.microsoftonline.us")


def _authority():
    """Private clouds / Azure Stack (AZURE_AUTHORITY_HOST elsewhere) skip instance discovery,
    which would otherwise ask login.microsoftonline.com about a host it does not know."""
    from urllib.parse import urlsplit
    host = os.environ.get("AZURE_AUTHORITY_HOST")
    if host and urlsplit(host if "//" in host else "https://" + host).hostname \
            not in PUBLIC_AUTHORITIES:
        return {"disable_instance_discovery": True}
    return {}


def make_credential(name: str, cfg, tenant: str | None, device_code_callback: DeviceCodeCallback):
    """The azure-identity credential for one method (raises if it cannot be built)."""
    import azure.identity as ai
    tenant_kw = {"tenant_id": tenant} if tenant else {}
    tenant_kw.update(_authority())
    if name == "environment":
        return ai.EnvironmentCredential(**_authority(), **_persistence(cfg))
    if name == "managed-identity":
        client_id = os.environ.get("AZURE_CLIENT_ID") or cfg.get("general.azure-client-id")
        return ai.ManagedIdentityCredential(client_id=client_id) if client_id else \
            ai.ManagedIdentityCredential()
    if name == "cli":
        return ai.AzureCliCredential(**({"tenant_id": tenant} if tenant else {}))
    if name == "browser":
        return ai.InteractiveBrowserCredential(**tenant_kw, **_persistence(cfg))
    if name == "device-code":
        return ai.DeviceCodeCredential(prompt_callback=device_code_callback, **tenant_kw,
                                       **_persistence(cfg))
    if name == "service-principal":
        tenant = tenant or os.environ.get("AZURE_TENANT_ID")
        client_id = os.environ.get("AZURE_CLIENT_ID") or cfg.get("general.azure-client-id")
        cert = os.environ.get("AZURE_CLIENT_CERTIFICATE_PATH") or \
            cfg.get("general.azure-client-certificate")
        secret = os.environ.get("AZURE_CLIENT_SECRET")
        if not (tenant and client_id and (secret or cert)):
            from azure.identity import CredentialUnavailableError
            raise CredentialUnavailableError("service principal not configured")
        if cert:
            return ai.CertificateCredential(tenant, client_id, cert, **_authority(),
                                            **_persistence(cfg))
        return ai.ClientSecretCredential(tenant, client_id, secret, **_authority(),
                                         **_persistence(cfg))
    raise AuthError(f"unknown login method {name!r}", hint="one of: " + ", ".join(METHODS))


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


def login(session, method: str | None = None, tenant: str | None = None, out=None,
          device_code_callback: DeviceCodeCallback | None = None) -> LoginStatus:
    """Log in for this kernel session; a second call is a no-op saying who is logged in."""
    with session.lock:
        if session.auth is not None:
            return whoami(session, already=True)
    cfg = session.config()
    method = method or cfg.get("general.authentication") or "auto"
    if method not in METHODS:
        raise AuthError(f"unknown login method {method!r}", key="general.authentication",
                        hint="one of: " + ", ".join(METHODS))
    tenant = tenant or cfg.get("general.azure-tenant-id")
    require("azure.identity", "azure-identity", "azure", "Azure login")
    callback = device_code_callback or _default_device_callback(out)
    chain = AUTO_CHAIN if method == "auto" else (method,)
    tried = []
    for name in chain:
        credential = None
        try:
            credential = make_credential(name, cfg, tenant, callback)
            token = credential.get_token(LOGIN_SCOPE)
        except AuthError:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is reported below
            tried.append((name, _reason(err)))
            if credential is not None and hasattr(credential, "close"):
                credential.close()
            continue
        claims = token_claims(token.token)
        cache = AuthCache(credential, name if method == "auto" else method,
                          claims.get("tid") or tenant, identity_from_claims(claims))
        cache.credential._tokens[((LOGIN_SCOPE,), None, None)] = token
        if "upn" in claims or "preferred_username" in claims:  # a user, not an app
            cache.object_id = claims.get("oid")
        with session.lock:
            session.auth = cache
        from . import vault
        vault.load(session, cfg)
        status = whoami(session)
        if out is not None:
            print(status, file=out)
        return status
    lines = [f"  - {name}: {why} (fix: {FIXES.get(name, '')})" for name, why in tried]
    raise AuthError("login failed; tried " + ", ".join(n for n, _ in tried) + "\n" +
                    "\n".join(lines), hint=f"or pick another method with {assign('method', 'M')}")


def logout(session) -> str:
    """Forget the credential, tokens and secrets of this kernel session."""
    with session.lock:
        cache, session.auth = session.auth, None
        session.invalidate()  # stores and backends (Batch clients) built on the credential or a vault key
    if cache is None:
        return "not logged in"
    who = cache.who
    cache.clear()
    return f"logged out {who}"


def whoami(session, already: bool = False) -> LoginStatus:
    cache = session.auth
    if cache is None:
        return LoginStatus(None, None, None, logged_in=False)
    names = sorted(set(cache.vault_names))
    return LoginStatus(cache.who, cache.tenant, cache.method, cache.vault_url, names,
                       cache.vault_error, already=already)


def credential(session):
    """The session's TokenCredential for SDK clients; AuthError if not logged in."""
    cache = session.auth
    if cache is None:
        raise AuthError("not logged in to Azure", hint="run %xt_login first")
    return cache.credential
