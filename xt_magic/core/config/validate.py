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
from .resolved import MASK, Origin, VaultRef

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.yaml")
BUILTIN_SERVICES = ("pool", "slurm")
TARGET_SERVICE_TYPES = ("batch", "aml", "philly", "itp", "singularity")
JSON_TYPES = {"integer": "an integer", "number": "a number", "string": "a string",
              "boolean": "true or false", "array": "a list", "object": "a mapping", "null": "null"}


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """schema.yaml as a dict."""
    from ruamel.yaml import YAML
    with open(SCHEMA, encoding="utf-8") as fh:
        return YAML(typ="safe").load(fh)


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


def resolve_ref(node: dict) -> dict:
    ref = node.get("$ref") if isinstance(node, dict) else None
    if ref and ref.startswith("#/$defs/"):
        return schema()["$defs"][ref.rsplit("/", 1)[1]]
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


def problem(origins: dict, path: tuple, message: str, hint: str | None = None) -> Problem:
    origin = where(origins, path)
    file = origin.file or (f"<{origin.layer}>" if origin.layer != "defaults" else None)
    return Problem(message, file=file, line=origin.line, key=key_of(path) or None, hint=hint)


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
    out: list[Problem] = []
    for err in validator().iter_errors(for_schema(data)):
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

    for tname, target in targets.items():
        base = ("compute-targets", tname)
        svc = target.get("service")
        if ref(base + ("service",), svc, {**{b: {} for b in BUILTIN_SERVICES}, **services},
               "external-services", "use pool, slurm or an external-services entry of type batch"):
            kind = (services.get(svc) or {}).get("type")
            if svc not in BUILTIN_SERVICES and kind not in TARGET_SERVICE_TYPES:
                out.append(problem(origins, base + ("service",),
                                   f"service {svc!r} is of type {kind}, not a compute service",
                                   "use pool, slurm or an external-services entry of type batch"))
        ref(base + ("setup",), target.get("setup"), setups, "setups")
        ref(base + ("docker",), target.get("docker"), dockers, "dockers")
        ref(base + ("azure-image",), target.get("azure-image"), images, "azure-batch-images")
        boxes_of = target.get("boxes")  # a wrong type is reported by the schema check
        for i, box in enumerate(boxes_of if isinstance(boxes_of, list) else []):
            if isinstance(box, str) and box not in boxes and not _is_address(box):
                out.append(problem(origins, base + ("boxes", i), f"box {box!r} is not defined in boxes",
                                   did_you_mean(box, boxes) or "add it under boxes: or give user@host"))
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


def _want_type(out, origins, path, name, services, kind):
    got = services[name].get("type")
    if got != kind:
        out.append(problem(origins, path, f"{name!r} is a service of type {got}, expected type {kind}",
                           did_you_mean(name, [n for n, s in services.items() if s.get("type") == kind])))


def _is_address(box: str) -> bool:
    return box == "localhost" or any(c in box for c in "@.:")


def unused_notes(layers) -> list[str]:
    """"not used by xt_magic" notes for XT keys/sections set in a user's files."""
    notes = []
    top = schema()["properties"]
    for layer in layers:
        if layer.name == "defaults" or not isinstance(layer.data, dict):
            continue
        for section, body in layer.data.items():
            node = top.get(section)
            if not node:
                continue
            line = layer.lines.get((section,))
            at = f"{layer.file}:{line}" if layer.file and line else (layer.file or layer.name)
            if node.get("x-unused"):
                notes.append(f"{at}: {section}: accepted, not used by xt_magic")
            elif isinstance(body, dict):
                for key in body:
                    sub = (node.get("properties") or {}).get(key)
                    if isinstance(sub, dict) and sub.get("x-unused") and body[key] is not None:
                        line = layer.lines.get((section, key))
                        at = f"{layer.file}:{line}" if layer.file and line else (layer.file or layer.name)
                        notes.append(f"{at}: {section}.{key}: accepted, not used by xt_magic")
    return notes


def problems_of(data: dict, origins: dict) -> list[Problem]:
    """Every problem of a merged config (schema, then cross references), sorted by place."""
    found = _schema_problems(data, origins) + _ref_problems(data, origins)
    seen, unique = set(), []
    for p in found:
        if str(p) not in seen:
            seen.add(str(p))
            unique.append(p)
    return sorted(unique, key=lambda p: (p.file or "", p.line or 0, p.key or ""))


def check(data: dict, origins: dict, layers) -> list[str]:
    """Raise ConfigError listing every problem; return the non-fatal notes."""
    found = problems_of(data, origins)
    if found:
        head = str(found[0]) if len(found) == 1 else f"{len(found)} problems in the config"
        raise ConfigError(head, problems=found, hint=None)
    return unused_notes(layers) + substitution_notes(data, origins)


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
