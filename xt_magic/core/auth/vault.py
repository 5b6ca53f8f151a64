"""Key Vault secrets for ``$vault`` config values (azure-keyvault-secrets, the login credential).

The vault is the ``external-services`` entry named by ``xt-services.vault`` (``type: vault``,
``url: https://NAME.vault.azure.net/``). A value ``$vault`` at ``external-services.SVC.FIELD``
resolves, on first use, to (first match wins):

1. XT's single JSON secret ``xt-keys``: ``{"SVC": "value"}`` or ``{"SVC": {"FIELD": "value"}}``;
2. the secret named by the service's ``secret-name``, else ``SVC`` (for the field ``key``) or
   ``SVC-FIELD`` (any other field), with ``_`` turned into ``-`` (Key Vault names allow only
   letters, digits and dashes).

Values are cached in the session's AuthCache and never shown: errors name secrets, not values.
"""
from __future__ import annotations

import json
import re

from ..errors import AuthError, ConfigError, require

XT_KEYS = "xt-keys"

# Tests (and exotic networks) may route the vault's traffic through their own azure-core
# transport: a zero-argument factory returning an HttpTransport, or None for the default.
TRANSPORT_FACTORY = None


def secret_names(service: str, field: str | None) -> list[str]:
    """The per-service secret name for ``external-services.SERVICE.FIELD``."""
    base = re.sub(r"[^A-Za-z0-9-]", "-", service)
    return [base] if field in (None, "key") else [f"{base}-{re.sub(r'[^A-Za-z0-9-]', '-', field)}"]


def vault_url(cfg) -> str | None:
    name = cfg.get("xt-services.vault")
    if not name:
        return None
    service = cfg.get(f"external-services.{name}")
    if not isinstance(service, dict) or not service.get("url"):
        raise ConfigError(f"vault service {name!r} has no url",
                          key=f"external-services.{name}.url",
                          hint="e.g. url: https://NAME.vault.azure.net/")
    return str(service["url"])


def _client(session, cfg):
    from .service import credential
    cache = session.auth
    cred = credential(session)
    if cache.vault_client is None:
        url = vault_url(cfg)
        if not url:
            raise AuthError("no vault configured for $vault values", key="xt-services.vault",
                            hint="name an external-services entry of type vault")
        SecretClient = require("azure.keyvault.secrets", "azure-keyvault-secrets", "azure",
                               "$vault secrets").SecretClient
        kwargs = {"transport": TRANSPORT_FACTORY()} if TRANSPORT_FACTORY else {}
        cache.vault_client = SecretClient(url, cred, **kwargs)
        cache.vault_url = url
    return cache.vault_client


def _fail(err: Exception, what: str) -> AuthError:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    if isinstance(err, ClientAuthenticationError):
        return AuthError(f"vault refused the login credential while {what}",
                         hint="ask for the 'Key Vault Secrets User' role on the vault")
    if isinstance(err, HttpResponseError):
        return AuthError(f"vault error while {what}: HTTP {err.status_code}",
                         hint="check the vault url and your role on the vault")
    return AuthError(f"vault unreachable while {what}: {type(err).__name__}",
                     hint="check the vault url in external-services")


def load(session, cfg) -> None:
    """At login: list the vault's secret names and read ``xt-keys`` (if any). Records, does not
    raise, a vault failure (the login itself succeeded)."""
    cache = session.auth
    try:
        url = vault_url(cfg)
    except ConfigError as err:
        cache.vault_error = str(err)
        return
    if not url:
        return
    try:
        client = _client(session, cfg)
        cache.vault_names = sorted(p.name for p in client.list_properties_of_secrets()
                                   if p.enabled is not False)
        if XT_KEYS in cache.vault_names:
            _load_xt_keys(cache, client)
        else:
            cache.xt_keys = {}  # known absent: no need to ask for it later
    except AuthError as err:
        cache.vault_error = str(err)
    except Exception as err:  # noqa: BLE001 - SDK errors translated
        cache.vault_error = str(_fail(err, "listing secrets"))


def _load_xt_keys(cache, client) -> None:
    from azure.core.exceptions import ResourceNotFoundError
    try:
        value = client.get_secret(XT_KEYS).value or "{}"
    except ResourceNotFoundError:
        cache.xt_keys = {}
        return
    try:
        cache.xt_keys = json.loads(value)
        if not isinstance(cache.xt_keys, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        cache.xt_keys = {}
        cache.vault_error = f"secret {XT_KEYS} is not JSON (expected service -> key)"
    cache.secrets.set(XT_KEYS, value)


def resolve(session, service: str, field: str | None = "key", cfg=None) -> str:
    """The secret for ``external-services.SERVICE.FIELD``; cached for the session."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    cfg = cfg or session.config()
    if session.auth is None:
        raise AuthError(f"$vault value of external-services.{service}.{field} needs a login",
                        hint="run %xt_login first")
    cache = session.auth
    client = _client(session, cfg)
    if cache.xt_keys is None:  # not read at login (e.g. listing was refused): ask once now
        try:
            _load_xt_keys(cache, client)
        except Exception as err:  # noqa: BLE001
            raise _fail(err, f"reading secret {XT_KEYS}") from None
    entry = (cache.xt_keys or {}).get(service)
    if isinstance(entry, dict):
        entry = entry.get(field or "key")
    if isinstance(entry, str):
        return entry
    custom = cfg.get(f"external-services.{service}.secret-name")
    names = [custom] if custom else secret_names(service, field)
    for name in names:
        value = cache.secrets.get(name)
        if value is not None:
            return value
        try:
            value = client.get_secret(name).value
        except ResourceNotFoundError:
            continue
        except HttpResponseError as err:
            raise _fail(err, f"reading secret {name}") from None
        except Exception as err:  # noqa: BLE001
            raise _fail(err, f"reading secret {name}") from None
        cache.secrets.set(name, value)
        if name not in cache.vault_names:
            cache.vault_names.append(name)
        return value
    raise AuthError(f"no vault secret for external-services.{service}.{field or 'key'}",
                    hint=f"add secret {names[0]!r} to {cache.vault_url}, or an entry "
                         f"{service!r} to the JSON secret {XT_KEYS!r}")


def is_vault_ref(value) -> bool:
    return type(value).__name__ == "VaultRef" or (isinstance(value, str)
                                                   and value.strip() == "$vault")


def resolve_value(session, value, service: str, field: str | None = "key") -> str:
    """``value`` itself, or the secret when it is a ``$vault`` reference (VaultRef)."""
    if type(value).__name__ == "VaultRef":
        return resolve(session, value.service or service, value.key or field)
    if isinstance(value, str) and value.strip() == "$vault":
        return resolve(session, service, field)
    return str(value)


def resolve_secret(session, cfg, key: str) -> str:
    """Resolve the config value at dotted ``key`` (e.g. ``external-services.store.key``)."""
    value = cfg.get(key)
    if value is None:
        raise ConfigError("no value", key=key)
    parts = key.split(".")
    service = parts[1] if len(parts) >= 3 and parts[0] == "external-services" else parts[-1]
    if type(value).__name__ == "VaultRef":
        return resolve(session, value.service or service, value.key or parts[-1], cfg)
    if isinstance(value, str) and value.strip() == "$vault":
        return resolve(session, service, parts[-1], cfg)
    return str(value)
