"""Validate a merged config against schema.yaml and check cross references.

Every problem is collected (never the first only) and located at the file:line of the layer that set
the offending value. Schema annotations used here: ``x-secret`` (never echo the value) and
``x-unused`` (XT keys accepted with a "not used by xt_magic" note).
"""
from __future__ import annotations

import difflib
import functools
import os
from typing import Any, Iterable

from ..errors import ConfigError, Problem
from .cache import cache_path, cache_write
from .resolved import MASK, Origin, VaultRef

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.yaml")
#: external-services types XT had for things other than compute (a target naming one is wrong)
NON_COMPUTE_TYPES = ("storage", "vault", "mongo", "registry", "odbc")
#: named-entry sections: a problem inside one entry stops only what uses that entry
ENTRY_SECTIONS = ("external-services", "compute-targets", "setups", "boxes", "dockers",
                  "azure-batch-images", "providers")
JSON_TYPES = {"integer": "an integer", "number": "a number", "string": "a string",
              "boolean": "true or false", "array": "a list", "object": "a mapping", "null": "null"}


@functools.lru_cache(maxsize=1)
def _schema_file() -> dict:
    """schema.yaml, parsed once per version of it: the parse (~170 ms of YAML) is kept as JSON
    in the cache dir under the file's sha256."""
    import hashlib
    import json
    with open(SCHEMA, "rb") as fh:
        raw = fh.read()
    cached = cache_path("schema", hashlib.sha256(raw).hexdigest() + ".json")
    try:
        with open(cached, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        pass
    from ruamel.yaml import YAML
    out = YAML(typ="safe").load(raw.decode("utf-8"))
    cache_write(cached, json.dumps(out))
    return out


def _valid_marker(instance) -> str | None:
    """Where a config instance the schema accepted is remembered (by the sha256 of schema and
    instance: validation is a pure function of the two), so a new kernel with the same config
    needs neither jsonschema nor a validation pass; None when it is not plain JSON."""
    import hashlib
    import json
    try:
        text = json.dumps([schema(), instance], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return cache_path("valid-config", hashlib.sha256(text.encode()).hexdigest())


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """schema.yaml with every registered backend's target keys and service types (plug-ins too)."""
    from ..registry import backend_classes
    return build_schema(backend_classes())


def build_schema(classes: dict) -> dict:
    """schema.yaml plus the compute-target keys (``target_schema``) and external-service types
    (``service_types``) the backend ``classes`` declare. A target key's ``x-kinds`` lists the
    backends that read it (none: every target has it)."""
    import copy
    out = copy.deepcopy(_schema_file())
    props = out["$defs"]["target"]["properties"]
    for kind, cls in classes.items():
        for key, node in (cls.target_schema or {}).items():
            if key in props and "x-kinds" not in props[key]:
                continue  # a key every target has
            if key in props:
                props[key]["x-kinds"].append(kind)
                props[key]["description"] += f"; {kind}: {node.get('description', '')}"
            else:
                props[key] = {**node, "x-kinds": [kind], "x-kind-descriptions": {},
                              "description": f"{kind}: {node.get('description', '')}"}
            # the form shows a target of one kind that kind's own words
            props[key]["x-kind-descriptions"][kind] = node.get("description", "")
    types = out["$defs"]["service"]["properties"]["type"]["enum"]
    types.extend(t for cls in classes.values() for t in cls.service_types if t not in types)
    return out


@functools.lru_cache(maxsize=1)
def validator():
    # jsonschema imports rfc3987_syntax (when installed) for "iri" format checks, which builds a
    # grammar for ~1.3 s; the schema uses no formats, so hide it during the import.
    import sys
    hide = "rfc3987_syntax" not in sys.modules
    if hide:
        sys.modules["rfc3987_syntax"] = None
    try:
        import jsonschema
    finally:
        if hide and sys.modules.get("rfc3987_syntax", 0) is None:
            del sys.modules["rfc3987_syntax"]
    return jsonschema.Draft202012Validator(schema())


@functools.lru_cache(maxsize=1)
def secret_keys() -> frozenset:
    """Key names marked ``x-secret`` anywhere in the schema."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if isinstance(sub, dict) and sub.get("x-secret"):
                    found.add(name)
            for sub in node.values():
                walk(sub)
        elif isinstance(node, list):
            for sub in node:
                walk(sub)
    walk(schema())
    return frozenset(found)


def resolve_ref(node: dict, root: dict | None = None) -> dict:
    ref = node.get("$ref") if isinstance(node, dict) else None
    if ref and ref.startswith("#/$defs/"):
        return (root or schema())["$defs"][ref.rsplit("/", 1)[1]]
    return node


def schema_for(path: Iterable) -> dict | None:
    """The schema node of the value at ``path`` (key segments), or None for an unknown key."""
    node = schema()
    for seg in path:
        node = resolve_ref(node)
        props = node.get("properties") or {}
        if seg in props:
            node = props[seg]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("type") == "array" and isinstance(seg, int):
            node = node.get("items") or {}
        elif node.get("type") == "object" and "additionalProperties" not in node:
            return {}  # free-form (x-unused sections)
        else:
            return None
    return resolve_ref(node)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def key_of(path: Iterable) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def where(origins: dict, path: tuple) -> Origin:
    path = tuple(path)
    while path:
        if path in origins:
            return origins[path]
        path = path[:-1]
    return Origin("defaults")


class PathProblem(Problem):
    """A Problem that remembers the key path it is about (to tell which entry it belongs to)."""

    __slots__ = ("path",)


def problem(origins: dict, path: tuple, message: str, hint: str | None = None) -> Problem:
    origin = where(origins, path)
    file = origin.file or (f"<{origin.layer}>" if origin.layer != "defaults" else None)
    out = PathProblem(message, file=file, line=origin.line, key=key_of(path) or None, hint=hint)
    out.path = tuple(path)
    return out


def place(origins: dict, path: tuple) -> str:
    """``file:line: key`` of the value at ``path``."""
    p = problem(origins, path, "")
    return ": ".join(x for x in (p.location(), p.key) if x)


def shown(value: Any, path: tuple) -> str:
    """A value for a message: secrets and $vault never appear."""
    if isinstance(value, VaultRef) or (path and path[-1] in secret_keys()):
        return MASK
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def for_schema(value: Any) -> Any:
    """The instance jsonschema sees: nulls (unset) dropped, VaultRef as the string "$vault"."""
    if isinstance(value, dict):
        return {k: for_schema(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [for_schema(v) for v in value]
    if isinstance(value, VaultRef):
        return "$vault"
    return value


def _schema_problems(data: dict, origins: dict) -> list[Problem]:
    instance = for_schema(data)
    marker = _valid_marker(instance)
    if marker and os.path.exists(marker):
        return []
    out = _schema_errors(instance, origins)
    if marker and not out:
        cache_write(marker, "")
    return out


def _schema_errors(instance, origins: dict) -> list[Problem]:
    out: list[Problem] = []
    for err in validator().iter_errors(instance):
        path = tuple(err.absolute_path)
        kind, node = err.validator, err.schema
        if kind == "additionalProperties" and isinstance(err.instance, dict):
            known = list((node.get("properties") or {}))
            for extra in err.instance:
                if extra in known or (node.get("patternProperties")):
                    continue
                what = "unknown section" if not path else "unknown key"
                hint = did_you_mean(extra, known) or (
                    f"known: {', '.join(known)}" if len(known) <= 12 else None)
                out.append(problem(origins, path + (extra,), what, hint))
        elif kind == "type":
            want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
            out.append(problem(origins, path, f"expected {' or '.join(JSON_TYPES.get(t, t) for t in want)}"
                                              f", got {shown(err.instance, path)}"))
        elif kind in ("enum", "const"):
            choices = node.get("enum") or [node.get("const")]
            out.append(problem(origins, path,
                               f"expected one of {', '.join(map(str, choices))}; got {shown(err.instance, path)}",
                               did_you_mean(err.instance, choices)))
        elif kind == "required":
            missing = [k for k in err.validator_value if k not in (err.instance or {})]
            out.append(problem(origins, path, f"missing required key {', '.join(map(repr, missing))}"))
        elif kind in ("minimum", "maximum"):
            word = "at least" if kind == "minimum" else "at most"
            out.append(problem(origins, path, f"expected {word} {err.validator_value}, got {shown(err.instance, path)}"))
        else:
            out.append(problem(origins, path, err.message if not path or path[-1] not in secret_keys()
                               else f"invalid value ({kind})"))
    return out


def _entries(data: dict, section: str) -> dict:
    value = data.get(section)
    return {k: v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}


def _ref_problems(data: dict, origins: dict) -> list[Problem]:
    out: list[Problem] = []
    services, setups, boxes = (_entries(data, s) for s in ("external-services", "setups", "boxes"))
    dockers, images, targets = (_entries(data, s) for s in ("dockers", "azure-batch-images", "compute-targets"))

    def ref(path, name, table, section, hint=None):
        if isinstance(name, str) and name and name not in table:
            out.append(problem(origins, path, f"{name!r} is not defined in {section}",
                               did_you_mean(name, table) or hint or f"add it under {section}:"))
            return False
        return isinstance(name, str) and bool(name)

    classes = _classes(data, origins, out)
    served = {name for cls in classes.values() for name in cls.services}
    for tname, target in targets.items():
        base = ("compute-targets", tname)
        svc = target.get("service")
        if ref(base + ("service",), svc, {**{b: {} for b in served}, **services},
               "external-services", "use pool, slurm or an external-services entry of type batch"):
            _target_problems(out, origins, data, tname, target, classes)
        known = (schema()["$defs"]["target"].get("properties") or {})
        for key in target:
            if key not in known and not any(key in (cls.target_schema or {}) for cls in classes.values()):
                out.append(problem(origins, base + (key,), "unknown key",
                                   did_you_mean(key, known) or None))
        ref(base + ("setup",), target.get("setup"), setups, "setups")
        ref(base + ("docker",), target.get("docker"), dockers, "dockers")
        ref(base + ("azure-image",), target.get("azure-image"), images, "azure-batch-images")
        boxes_of = target.get("boxes")  # a wrong type is reported by the schema check
        for i, box in enumerate(boxes_of if isinstance(boxes_of, list) else []):
            if isinstance(box, str) and box not in boxes and not _is_address(box):
                out.append(problem(origins, base + ("boxes", i), f"box {box!r} is not defined in boxes",
                                   did_you_mean(box, boxes) or "add it under boxes: or give user@host"))
    from ..registry import STORE_PROVIDERS as PROVIDERS
    providers = data.get("providers") if isinstance(data.get("providers"), dict) else {}
    stores = providers.get("storage") if isinstance(providers.get("storage"), dict) else {}
    for sname, service in services.items():
        provider = service.get("provider")
        if service.get("type") == "storage" and isinstance(provider, str) and provider not in PROVIDERS:
            if provider not in stores:
                out.append(problem(origins, ("external-services", sname, "provider"),
                                   f"unknown storage provider {provider!r}",
                                   did_you_mean(provider, list(PROVIDERS) + list(stores))
                                   or f"one of {', '.join(PROVIDERS)} or a name in providers.storage"))
            else:
                from ..errors import XTError
                from ..registry import providers as provider_classes
                from .resolved import ResolvedConfig
                try:
                    cls = provider_classes(ResolvedConfig(
                        {"providers": {"storage": {provider: stores[provider]}}}, {}, []), "storage")
                except XTError as err:
                    out.append(problem(origins, ("providers", "storage", provider), err.message, err.hint))
                else:
                    if cls.get(provider) is None:
                        out.append(problem(origins, ("external-services", sname, "provider"),
                                           f"provider {provider!r} is XT's own class, not usable by xt_magic",
                                           f"use one of {', '.join(PROVIDERS)}"))
    for bname, box in boxes.items():
        ref(("boxes", bname, "setup"), box.get("setup"), setups, "setups")
    for dname, docker in dockers.items():
        if ref(("dockers", dname, "registry"), docker.get("registry"), services, "external-services"):
            _want_type(out, origins, ("dockers", dname, "registry"), docker["registry"], services, "registry")
    xts = data.get("xt-services") if isinstance(data.get("xt-services"), dict) else {}
    for key, kind in (("storage", "storage"), ("vault", "vault"), ("mongo", "mongo")):
        if ref(("xt-services", key), xts.get(key), services, "external-services"):
            _want_type(out, origins, ("xt-services", key), xts[key], services, kind)
    ref(("xt-services", "target"), xts.get("target"), targets, "compute-targets")
    return out


def _classes(data: dict, origins: dict, out: list) -> dict:
    """The backend classes this config can use (registry + its providers.compute), reporting a
    providers entry that cannot be used at its key."""
    from ..errors import XTError
    from ..registry import backend_classes
    from .resolved import ResolvedConfig
    providers = data.get("providers") if isinstance(data.get("providers"), dict) else {}
    compute = providers.get("compute") if isinstance(providers.get("compute"), dict) else {}
    good = {}
    for name, path in compute.items():
        try:
            backend_classes(ResolvedConfig({"providers": {"compute": {name: path}}}, {}, []))
        except XTError as err:
            out.append(problem(origins, ("providers", "compute", name), err.message, err.hint))
        else:
            good[name] = path
    return backend_classes(ResolvedConfig({"providers": {"compute": good}}, {}, []))


def _target_problems(out, origins, data, tname, target, classes) -> None:
    """Which backend runs this target, and keys it has that no backend reads."""
    from ..registry import backend_class
    from .resolved import ResolvedConfig
    base = ("compute-targets", tname)
    svc = target.get("service")
    kind = (_entries(data, "external-services").get(svc) or {}).get("type")
    try:
        backend_class(ResolvedConfig(data, origins, []), tname, target, classes)
    except ConfigError as err:
        message = (f"service {svc!r} is of type {kind}, not a compute service"
                   if kind in NON_COMPUTE_TYPES else err.message.split(": ", 1)[-1])
        out.append(problem(origins, base + ("service",), message, err.hint))


def target_notes(data: dict, origins: dict) -> list[str]:
    """Keys set on a target that its backend does not read (they belong to another kind)."""
    from ..registry import backend_class
    from .resolved import ResolvedConfig
    notes = []
    cfg = ResolvedConfig(data, origins, [])
    try:
        classes = _classes(data, origins, [])
    except Exception:  # noqa: BLE001 - notes never fail a load
        return notes
    common = {k for k, v in schema()["$defs"]["target"]["properties"].items() if "x-kinds" not in v}
    for tname, target in _entries(data, "compute-targets").items():
        try:
            cls = backend_class(cfg, tname, target, classes)
        except ConfigError:
            continue
        for key in target:
            if key not in common and key not in (cls.target_schema or {}) and target[key] is not None \
                    and where(origins, ("compute-targets", tname, key)).layer != "defaults":
                notes.append(f"{place(origins, ('compute-targets', tname, key))}: not used by "
                             f"{cls.kind} targets")
    return notes


def _want_type(out, origins, path, name, services, kind):
    got = services[name].get("type")
    if got != kind:
        out.append(problem(origins, path, f"{name!r} is a service of type {got}, expected type {kind}",
                           did_you_mean(name, [n for n, s in services.items() if s.get("type") == kind])))


def _is_address(box: str) -> bool:
    return box == "localhost" or any(c in box for c in "@.:")


def unused_notes(layers) -> list[str]:
    """Notes for keys a user's file sets that xt_magic accepts but does not act on (``x-unused``:
    XT-only; ``x-no-effect``: not acted on yet), and XT's own classes in ``providers``."""
    notes = []
    seen = set()

    def walk(layer, value, path):
        node = schema_for(path) if path else None
        if path and node is None:
            return
        flag = node.get("x-unused") and "accepted, not used by xt_magic" or \
            node.get("x-no-effect") and "accepted, has no effect in xt_magic yet" if node else None
        if flag and value is not None:
            line = layer.lines.get(path)
            at = f"{layer.file}:{line}" if layer.file and line else (layer.file or f"<{layer.name}>")
            note = f"{at}: {key_of(path)}: {flag}"
            if key_of(path) not in seen:
                seen.add(key_of(path))
                notes.append(note)
            return
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(layer, sub, path + (key,))
        if len(path) == 3 and path[0] == "providers" and isinstance(value, str) and \
                value.startswith("xtlib."):
            line = layer.lines.get(path)
            at = f"{layer.file}:{line}" if layer.file and line else (layer.file or f"<{layer.name}>")
            notes.append(f"{at}: {key_of(path)}: XT's own class {value}, accepted, not used by "
                         "xt_magic" + (" (xt_magic's own backend serves this name)"
                                       if path[1] in ("compute", "storage") else ""))

    for layer in layers:
        if layer.name != "defaults" and isinstance(layer.data, dict):
            walk(layer, layer.data, ())
    return notes


def entry_of(path: tuple) -> tuple | None:
    """The named entry (section, name) a key path is in, if any."""
    if len(path) >= 2 and path[0] in ENTRY_SECTIONS:
        return (path[0], str(path[1]))
    return None


def always_used(data: dict) -> set:
    """Entries every command uses: the store's and the vault's services."""
    xts = data.get("xt-services") if isinstance(data.get("xt-services"), dict) else {}
    return {("external-services", xts[k]) for k in ("storage", "vault") if isinstance(xts.get(k), str)}


def problems_of(data: dict, origins: dict) -> list[Problem]:
    """Every problem of a merged config (schema, then cross references), sorted by place."""
    found = _schema_problems(data, origins) + _ref_problems(data, origins)
    seen, unique = set(), []
    for p in found:
        if str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    return sorted(unique, key=lambda p: (p.file or "", p.line or 0, p.key or ""))


def check(data: dict, origins: dict, layers, strict: bool = True) -> tuple[list, list, dict]:
    """-> (notes, warnings, deferred problems by entry). Raises ConfigError listing every problem
    (``strict``), or only those outside named entries and in the entries every command uses; the
    others wait for a command that uses their entry (``ResolvedConfig.check_used``)."""
    found = problems_of(data, origins)
    deferred: dict = {}
    if not strict:
        keep, fatal_entries = [], always_used(data)
        for p in found:
            entry = entry_of(getattr(p, "path", ()))
            if entry is None or entry in fatal_entries:
                keep.append(p)
            else:
                deferred.setdefault(entry, []).append(p)
        found = keep
    if found:
        head = str(found[0]) if len(found) == 1 else f"{len(found)} problems in the config"
        raise ConfigError(head, problems=found, hint=None)
    warnings = [f"{p} — {section}.{name} is not usable; only what uses it fails "
                "(%xt_config --validate lists every problem)"
                for (section, name), ps in deferred.items() for p in ps]
    notes = unused_notes(layers) + target_notes(data, origins) + substitution_notes(data, origins)
    return notes, warnings, deferred


def substitution_notes(data: dict, origins: dict) -> list[str]:
    """Notes for ``$vault`` with no xt-services.vault set, and ``${VAR}`` left unset."""
    import re
    xts = data.get("xt-services") if isinstance(data.get("xt-services"), dict) else {}
    notes = []

    def walk(value, path):
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, path + (key,))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(sub, path + (i,))
        elif isinstance(value, VaultRef) and not xts.get("vault"):
            notes.append(f"{place(origins, path)}: $vault needs xt-services.vault (a service of type vault) to be resolved")
        elif isinstance(value, str) and re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value):
            notes.append(f"{place(origins, path)}: {value!r}: environment variable not set")
    walk(data, ())
    return notes
