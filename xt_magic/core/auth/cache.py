"""The kernel-session auth cache: credential, access tokens and vault secrets, in memory only.

One :class:`AuthCache` lives on ``Session.auth`` between ``%xt_login`` and ``%xt_logout``. Its
:class:`SessionCredential` is what every SDK client gets: a TokenCredential that hands out cached
tokens and asks the underlying azure-identity credential again shortly before a token expires.
Secrets are held in a dict that no repr, str or error ever shows.
"""
from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

REFRESH_MARGIN = 300  # seconds before expiry at which a token is fetched again


class SessionCredential:
    """A TokenCredential caching tokens per (scopes, claims, tenant) and refreshing them early."""

    def __init__(self, credential, clock=time.time, margin: int = REFRESH_MARGIN):
        self._credential = credential
        self._clock = clock
        self._margin = margin
        self._tokens: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SessionCredential {type(self._credential).__name__}, {len(self._tokens)} token(s)>"

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  **kwargs):
        key = (scopes, claims, tenant_id)
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.expires_on - self._clock() > self._margin and not claims:
                return token
        token = self._credential.get_token(*scopes, claims=claims, tenant_id=tenant_id, **kwargs)
        with self._lock:
            self._tokens[key] = token
        return token

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()

    def close(self) -> None:
        self.clear()
        close = getattr(self._credential, "close", None)
        if close:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Secrets:
    """Resolved vault values by secret name. Never printed: repr shows names only."""

    def __init__(self):
        self._values: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Secrets {sorted(self._values)}>"

    __str__ = __repr__

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def set(self, name: str, value: str) -> None:
        self._values[name] = value

    def names(self) -> list[str]:
        return sorted(self._values)

    def values(self) -> list[str]:
        return list(self._values.values())

    def clear(self) -> None:
        self._values.clear()


class AuthCache:
    """What ``%xt_login`` leaves on ``Session.auth`` for this kernel only."""

    def __init__(self, credential, method: str, tenant: str | None, who: str,
                 clock=time.time):
        self.credential = SessionCredential(credential, clock=clock)
        self.method = method
        self.tenant = tenant
        self.who = who
        self.object_id: str | None = None              # the user's AAD object id (oid claim)
        self.secrets = Secrets()
        self.xt_keys: dict[str, Any] | None = None   # XT's single JSON "xt-keys" secret, parsed
        self.vault_url: str | None = None
        self.vault_names: list[str] = []              # secret names seen in the vault
        self.vault_error: str | None = None
        self.vault_client = None

    def __repr__(self) -> str:
        return (f"<AuthCache {self.who} tenant={self.tenant} method={self.method} "
                f"vault={self.vault_url} secrets={self.secrets.names()}>")

    def scrub(self, text: str) -> str:
        """``text`` with every cached secret value replaced by a mask (for error messages)."""
        values = self.secrets.values()
        if self.xt_keys:
            values += [v for v in _leaves(self.xt_keys) if isinstance(v, str)]
        for value in sorted(values, key=len, reverse=True):
            if value and len(value) >= 6:
                text = text.replace(value, "••••")
        return text

    def clear(self) -> None:
        self.credential.close()
        self.secrets.clear()
        self.xt_keys = None
        if self.vault_client is not None:
            self.vault_client.close()
            self.vault_client = None


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def token_claims(token: str) -> dict:
    """The (unverified) claims of a JWT access token: only to say who is logged in."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except Exception:  # noqa: BLE001 - opaque (non-JWT) tokens are fine
        return {}


def identity_from_claims(claims: dict) -> str:
    for name in ("upn", "preferred_username", "unique_name", "email"):
        if claims.get(name):
            return str(claims[name])
    if claims.get("appid") or claims.get("azp"):
        return f"app {claims.get('appid') or claims.get('azp')}"
    if claims.get("oid"):
        return f"object {claims['oid']}"
    return "unknown identity"
