"""The resolved config object, value origins and lazy ``$vault`` references (no heavy imports)."""
from __future__ import annotations

from typing import Any, NamedTuple

MASK = "••••"


class Origin(NamedTuple):
    """Where a value came from: layer (defaults/user/local/session/call), file and 1-based line."""
    layer: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.file:
            return f"{self.layer} {self.file}:{self.line}" if self.line else f"{self.layer} {self.file}"
        return self.layer


class VaultRef:
    """A ``$vault`` value: the secret named ``service`` in the team's Key Vault, resolved lazily.

    Never holds the secret. ``str``/``repr`` show ``$vault(service)`` so it can't leak by printing.
    ``key`` is the config key it stands for (e.g. ``"key"``), ``path`` the full dotted key.
    """

    __slots__ = ("service", "key", "path")

    def __init__(self, service: str, key: str | None = None, path: str | None = None):
        self.service, self.key, self.path = service, key, path

    def __str__(self) -> str:
        return f"$vault({self.service})"

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, VaultRef) and (self.service, self.key) == (other.service, other.key)

    def __hash__(self) -> int:
        return hash((self.service, self.key))


def split_key(key: str, data: Any = None) -> list[str]:
    """Split a dotted key into segments. With ``data``, a segment that itself contains dots
    (a box named ``10.0.0.5``) is matched against the keys present, longest first."""
    parts = key.split(".") if key else []
    if data is None:
        return parts
    out, node, i = [], data, 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            seg = ".".join(parts[i:j])
            if isinstance(node, dict) and seg in node:
                out.append(seg)
                node, i = node[seg], j
                break
        else:
            return out + parts[i:]
    return out


_MISSING = object()


def lookup(data: Any, key: str, default: Any = None) -> Any:
    node = data
    for seg in split_key(key, data):
        if not isinstance(node, dict) or seg not in node:
            return default
        node = node[seg]
    return node


class ResolvedConfig:
    """The merged config. ``data`` is the merged, substituted dict; ``get``/``origin`` by dotted key.

    ``layers`` lists (layer, file, raw data, origins) lowest first, for ``--explain``;
    ``notes`` are non-fatal remarks (sections XT had that xt_magic does not use).
    """

    def __init__(self, data: dict, origins: dict, layers: list, notes: list | None = None,
                 warnings: list | None = None, deferred: dict | None = None):
        self.data, self._origins, self.layers, self.notes = data, origins, layers, list(notes or [])
        #: one-line remarks a command shows once (repeated keys, unusable unused entries)
        self.warnings = list(warnings or [])
        #: (section, name) -> problems of a named entry, raised only by a command that uses it
        self.deferred = dict(deferred or {})

    def check_used(self, entries) -> None:
        """Raise ConfigError listing the problems of the named ``entries`` (section, name) a
        command is about to use; problems of other entries never stop it."""
        from ..errors import ConfigError
        found = [p for entry in dict.fromkeys(entries) for p in self.deferred.get(entry, [])]
        if found:
            raise ConfigError(str(found[0]) if len(found) == 1 else
                              f"{len(found)} problems in the config", problems=found)

    def target_entries(self, name: str) -> list[tuple[str, str]]:
        """The named entries compute target ``name`` uses: itself, its service, setup, boxes (and
        their setups), login box, docker (and its registry) and batch image."""
        data = self.data
        target = lookup(data, f"compute-targets.{name}")
        out = [("compute-targets", name)]
        if not isinstance(target, dict):
            return out

        def section(name):
            value = data.get(name)
            return value if isinstance(value, dict) else {}

        def add(sec, entry):
            if isinstance(entry, str) and entry in section(sec):
                out.append((sec, entry))
                return section(sec)[entry] if isinstance(section(sec)[entry], dict) else {}
            return None

        add("external-services", target.get("service"))
        add("setups", target.get("setup"))
        boxes = target.get("boxes") if isinstance(target.get("boxes"), list) else []
        for box in boxes + [target.get("login")]:
            entry = add("boxes", box)
            if entry:
                add("setups", entry.get("setup"))
        docker = add("dockers", target.get("docker"))
        if docker:
            add("external-services", docker.get("registry"))
        add("azure-batch-images", target.get("azure-image"))
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """The value at dotted ``key`` (``"compute-targets.local"`` returns the dict), or ``default``."""
        return lookup(self.data, key, default)

    def __getitem__(self, key: str) -> Any:
        value = lookup(self.data, key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: str) -> bool:
        return lookup(self.data, key, _MISSING) is not _MISSING

    def origin(self, key: str) -> Origin | None:
        """(layer, file, line) of the value at ``key``, or of the nearest enclosing key that has one."""
        segs = tuple(split_key(key, self.data))
        while segs:
            if segs in self._origins:
                return self._origins[segs]
            segs = segs[:-1]
        return None

    def __repr__(self) -> str:
        return f"<ResolvedConfig target={self.get('xt-services.target')!r} " \
               f"storage={self.get('xt-services.storage')!r}>"
