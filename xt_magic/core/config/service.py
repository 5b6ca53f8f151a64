"""What ``%xt_config`` does (called through core/api.py): show, get, explain, set, save, validate,
create, reset. Returned objects display as HTML in notebooks and as text elsewhere; secrets and
``$vault`` values are masked in all of them."""
from __future__ import annotations

import html
import json
import os
import re
from typing import Any

from ..errors import ConfigError, Problem
from ..naming import param, switch
from . import loader
from .resolved import MASK, VaultRef, lookup, split_key

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
#: templates that are not a backend's (a backend class names its own: ``Backend.template``)
OTHER_TEMPLATES = {"azure": os.path.join(TEMPLATES, "azure.yaml")}
TEMPLATE_KINDS = ("local", "pool", "batch", "slurm", "azure")  # the built-in ones


def templates() -> dict[str, str]:
    """kind -> template file for ``--create``: every registered backend's, then the others."""
    from ..registry import backend_classes
    out = {kind: cls.template for kind, cls in backend_classes().items() if cls.template}
    out.update(OTHER_TEMPLATES)
    return out


# ---- display -------------------------------------------------------------------------------------

class Shown:
    """A displayable result: text repr, optional HTML."""

    def __init__(self, text: str, html_text: str | None = None):
        self.text, self.html = text, html_text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def _repr_html_(self) -> str | None:
        return self.html


def mask(value: Any, path: tuple = ()) -> Any:
    """A copy of ``value`` fit for display: VaultRefs as ``$vault(svc)``, x-secret keys as ••••."""
    from .validate import secret_keys
    if isinstance(value, VaultRef):
        return str(value)
    if isinstance(value, dict):
        return {k: mask(v, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, path + (i,)) for i, v in enumerate(value)]
    if path and path[-1] in secret_keys() and value not in (None, "", "$vault"):
        return MASK
    return value


_PLAIN = re.compile(r"[A-Za-z0-9_./~@$-][A-Za-z0-9_ ./~@$*():+-]*")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~"}


def fmt(value: Any) -> str:
    """A value in YAML flow style."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if (_PLAIN.fullmatch(text) and text.lower() not in _RESERVED and not text.endswith((" ", ":"))
            and ": " not in text and not re.fullmatch(r"[-+0-9.e]+", text)):
        return text
    return json.dumps(text, ensure_ascii=False)


def short_origin(origin) -> str:
    if origin is None:
        return ""
    if origin.file:
        name = os.path.basename(origin.file) if origin.layer == "defaults" else origin.file
        return f"{origin.layer} {name}:{origin.line}" if origin.line else f"{origin.layer} {name}"
    return origin.layer


def rows(cfg, data: dict, path: tuple = (), depth: int = 0):
    """(depth, key, shown value or None for a mapping, origin) in document order."""
    for key, value in data.items():
        sub = path + (key,)
        origin = short_origin(cfg.origin(".".join(map(str, sub))) if cfg else None)
        if isinstance(value, dict) and value:
            yield depth, key, None, origin
            yield from rows(cfg, value, sub, depth + 1)
        else:
            yield depth, key, fmt(value), origin


def render(cfg, data: dict, title: str, summary: list[tuple[str, str]] | None = None,
           collapsible: bool = False) -> Shown:
    """Text (YAML-like, ``# origin`` per value) and HTML. ``collapsible``: one HTML ``<details>``
    per top-level section, closed, under a ``summary`` table of (label, value) shown first."""
    lines = [f"{label}: {value}" for label, value in summary or []]
    lines = [f"# {line}" for line in lines]
    for depth, key, value, origin in rows(cfg, data):
        left = "  " * depth + f"{key}:" + (f" {value}" if value is not None else "")
        lines.append(f"{left:<56} # {origin}" if value is not None else left)
    text = f"# {title}\n" + "\n".join(lines)
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("key", "value", "origin"))
    head = f"<tr>{head}</tr>"
    top = ""
    if summary:
        top = ("<table class='xt-config-summary'>" + "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'><code>{html.escape(v)}</code></td></tr>"
            for k, v in summary) + "</table>")
    if collapsible:
        parts = []
        for key, value in data.items():
            if isinstance(value, dict) and value:
                body = _html_rows(rows(cfg, value, (key,), 0))
                count = sum(1 for r in rows(cfg, value, (key,), 0) if r[2] is not None)
                parts.append(f"<details class='xt-config-section'><summary><b>"
                             f"{html.escape(str(key))}</b> <span style='color:#888'>({count} "
                             f"value{'s' * (count != 1)})</span></summary><table>{head}{body}"
                             f"</table></details>")
            else:
                origin = short_origin(cfg.origin(str(key))) if cfg else ""
                parts.append(f"<table>{_html_rows([(0, key, fmt(value), origin)])}</table>")
        page = (f"<div class='xt-config'><div><b>{html.escape(title)}</b></div>{top}"
                + "".join(parts) + "</div>")
        return Shown(text, page)
    table = (f"<div class='xt-config'><div><b>{html.escape(title)}</b></div>{top}<table>"
             f"{head}{_html_rows(rows(cfg, data))}</table></div>")
    return Shown(text, table)


def _html_rows(items) -> str:
    """Table rows; a section (no value) is one bold row across the table: no empty cells."""
    out = []
    for d, k, v, o in items:
        pad = f"padding-left:{0.3 + 1.2 * d}em"
        if v is None:
            out.append(f"<tr><td colspan=3 style='text-align:left;{pad}'><b>"
                       f"{html.escape(str(k))}</b></td></tr>")
        else:
            out.append(f"<tr><td style='text-align:left;{pad}'>{html.escape(str(k))}</td>"
                       f"<td style='text-align:left'><code>{html.escape(v)}</code></td>"
                       f"<td style='text-align:left;color:#888'>{html.escape(o)}</td></tr>")
    return "".join(out)


def summary(session, cfg) -> list[tuple[str, str]]:
    """What a user looks for first: target, store, workspace, experiment, login state."""
    target = str(cfg.get("xt-services.target") or "")
    kind = ""
    if target:
        entry = cfg.get(f"compute-targets.{target}") if f"compute-targets.{target}" in cfg else None
        kind = f" ({entry.get('service')})" if isinstance(entry, dict) and entry.get("service") else ""
    store = str(cfg.get("xt-services.storage") or "")
    service = cfg.get(f"external-services.{store}") if store and \
        f"external-services.{store}" in cfg else None
    where = ""
    if isinstance(service, dict):
        where = service.get("path") or service.get("provider") or ""
        where = f" ({mask(where, ('external-services', store, 'path'))})" if where else ""
    auth = getattr(session, "auth", None)
    login = f"logged in as {auth.who}" if auth is not None else "not logged in (%xt_login)"
    return [("target", target + kind), ("store", store + where),
            ("workspace", str(cfg.get("general.workspace") or "")),
            ("experiment", str(cfg.get("general.experiment") or "")), ("login", login)]


# ---- show / get / explain --------------------------------------------------------------------------

def _unknown_key(cfg, key: str) -> ConfigError:
    from .validate import did_you_mean
    segs, node, seen = split_key(key, cfg.data), cfg.data, []
    for seg in segs:
        if not isinstance(node, dict) or seg not in node:
            choices = list(node) if isinstance(node, dict) else []
            where = ".".join(seen) or "the config"
            return ConfigError(f"{key}: no such key in {where}",
                               hint=did_you_mean(seg, choices) or "see %xt_config", key=None)
        node = node[seg]
        seen.append(seg)
    return ConfigError(f"{key}: no such key")


def show(session, keys: list[str] | None = None) -> Shown:
    """The resolved config (or only ``keys``) with each value's origin."""
    cfg = session.config()
    if not keys:
        out = render(cfg, mask(cfg.data), "resolved xt_config (value  # layer file:line)",
                     summary=summary(session, cfg), collapsible=True)
        if cfg.notes:  # listed by --validate only: an XT file can have dozens
            out.text += f"\n# {len(cfg.notes)} note{'s' * (len(cfg.notes) != 1)}: see %xt_config --validate"
        return out
    data = {}
    for key in keys:
        if key not in cfg:
            raise _unknown_key(cfg, key)
        segs = split_key(key, cfg.data)
        node = data
        for seg in segs[:-1]:
            node = node.setdefault(seg, {})
        node[segs[-1]] = mask(cfg.get(key), tuple(segs))
    return render(cfg, data, "xt_config " + " ".join(keys))


def get(session, key: str) -> Any:
    """One resolved value, masked (a mapping for a section or entry)."""
    cfg = session.config()
    if key not in cfg:
        raise _unknown_key(cfg, key)
    return mask(cfg.get(key), tuple(split_key(key, cfg.data)))


def explain(session, key: str) -> Shown:
    """``key``'s value in every layer (file:line), and which one wins."""
    cfg = session.config()
    segs = tuple(split_key(key, cfg.data))
    found = []
    for layer in cfg.layers:
        value = lookup(layer.data, ".".join(segs), _ABSENT) if isinstance(layer.data, dict) else _ABSENT
        if value is _ABSENT:
            continue
        line = layer.lines.get(segs)
        place = f"{layer.file}:{line}" if layer.file and line else (layer.file or f"<{layer.name}>")
        found.append((layer.name, place, mask(loader.substitute(value, segs), segs)))
    if not found:
        from .validate import schema_for
        if schema_for(segs) is None:
            raise _unknown_key(cfg, key)
    final = mask(cfg.get(key), segs) if key in cfg else None
    lines = [f"{key} = {fmt(final) if key in cfg else '(unset)'}   # from {short_origin(cfg.origin(key)) if key in cfg else '-'}"]
    for i, (layer, place, value) in enumerate(found):
        mark = "  <- wins" if i == len(found) - 1 and key in cfg else ""
        lines.append(f"  {layer:<9} {place}: {fmt(value)}{mark}")
    if not found:
        lines.append("  (not set in any layer)")
    body = "".join(f"<tr><td>{html.escape(l)}</td><td><code>{html.escape(p)}</code></td>"
                   f"<td><code>{html.escape(fmt(v))}</code></td></tr>" for l, p, v in found)
    page = (f"<div class='xt-config-explain'><b>{html.escape(key)}</b> = "
            f"<code>{html.escape(fmt(final))}</code><table><tr><th>layer</th><th>where</th>"
            f"<th>value</th></tr>{body}</table></div>")
    return Shown("\n".join(lines), page)


_ABSENT = object()


# ---- set / reset / save ------------------------------------------------------------------------------

def typed(text: str, node: dict | None) -> Any:
    """A ``KEY=VALUE`` string as the schema's type for KEY (``null`` unsets)."""
    from ruamel.yaml import YAML
    if not isinstance(text, str):
        return text
    if text in ("null", "~"):
        return None
    if not node:
        try:
            return YAML(typ="safe").load(text) if text else ""
        except Exception:
            return text
    if "enum" in node:
        return next((c for c in node["enum"] if str(c) == text), text)
    kinds = node.get("type") or []
    kinds = kinds if isinstance(kinds, list) else [kinds]
    for kind in kinds:
        low = text.strip().lower()
        if kind == "boolean" and low in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return low in ("true", "yes", "on", "1")
        if kind == "integer" and re.fullmatch(r"[-+]?\d+", text.strip()):
            return int(text)
        if kind == "number" and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text.strip()):
            return float(text)
        if kind in ("array", "object"):
            if text.strip().startswith(("[", "{")):
                try:
                    return YAML(typ="safe").load(text)
                except Exception as err:
                    raise ConfigError(f"cannot parse {text!r}: {str(err).splitlines()[0]}") from None
            if kind == "array":
                return [w.strip() for w in text.split(",") if w.strip()]
        if kind == "string":
            return text
    return text  # the wrong type: validation names what was expected


def set_values(session, assignments: dict[str, str]) -> Shown:
    """Set session values typed by the schema; nothing changes unless the result validates."""
    from . import load_config
    from .validate import schema_for
    # unvalidated: a session value may be what fixes a problem in a file (the result is validated)
    cfg = load_config(cwd=session.cwd or os.getcwd(), session=session.values, validate=False)
    new = dict(session.values)
    for key, text in assignments.items():
        segs = split_key(key, cfg.data)
        new[".".join(segs)] = typed(text, schema_for(segs))
    # refuse only problems these values bring: a broken entry elsewhere must not block a set
    before = {(p.key, p.message) for p in _problems(session, session.values)}
    found = [p for p in _problems(session, new) if (p.key, p.message) not in before]
    if found:
        raise ConfigError(str(found[0]) if len(found) == 1 else f"{len(found)} problems in the config",
                          problems=found)
    with session.lock:
        session.values.clear()
        session.values.update(new)
        session.invalidate()
    done = [f"{k} = {fmt(mask(new['.'.join(split_key(k, cfg.data))], tuple(split_key(k, cfg.data))))}"
            for k in assignments]
    return Shown("session: " + "; ".join(done))


def _problems(session, values: dict) -> list:
    from . import load_config
    try:
        load_config(cwd=session.cwd or os.getcwd(), session=values)
    except ConfigError as err:
        return err.problems or [Problem(err.message, key=err.key)]
    return []


def reset(session) -> Shown:
    """Drop all session values."""
    n = len(session.values)
    with session.lock:
        session.values.clear()
        session.invalidate()
    return Shown(f"session: dropped {n} value{'s' * (n != 1)}")


def _plain_for_yaml(value: Any) -> Any:
    if isinstance(value, VaultRef):
        return "$vault"
    if isinstance(value, dict):
        return {k: _plain_for_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_for_yaml(v) for v in value]
    return value


def save(session, path: str | None = None) -> Shown:
    """Write the session values into the local xt_config.yaml (or ``path``), keeping comments and
    layout; the saved values then come from that file, so the session layer is emptied."""
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.util import load_yaml_guess_indent
    path = path or loader.local_config_path(session.cwd)
    if not session.values:
        return Shown("nothing to save: no session values (set some with %xt_config KEY=VALUE)")
    text = ""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}",
                              hint=f"pick another {param('path')}") from None
    # a broken file is reported (file:line), never overwritten; repeated keys keep the last (as read)
    doc = loader.parse_text(text, path) if text.strip() else None
    yaml = loader.yaml_rt()
    _, indent, seq_indent = load_yaml_guess_indent(text) if text.strip() else (None, 2, 0)
    yaml.indent(mapping=indent or 2, sequence=(indent or 2) + (seq_indent or 0), offset=seq_indent or 0)
    doc = doc if isinstance(doc, dict) else CommentedMap()
    for key, value in session.values.items():
        segs = split_key(key, doc)
        node = doc
        for seg in segs[:-1]:
            if not isinstance(node.get(seg), dict):
                node[seg] = CommentedMap()
            node = node[seg]
        node[segs[-1]] = _plain_for_yaml(value)
    import io
    from ...runner.runner import write_atomic
    text = io.StringIO()
    yaml.dump(doc, text)
    try:
        write_atomic(path, text.getvalue(), mode=0o666, keep_existing=True)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}",
                          hint=f"pick another {param('path')}") from None
    n = len(session.values)
    reset(session)
    return Shown(f"saved {n} value{'s' * (n != 1)} to {path}")


# ---- validate / create --------------------------------------------------------------------------------

def validate(session, path: str | None = None) -> Shown:
    """Validate ``path`` (over the defaults) or the whole resolved config, listing every problem.

    ConfigError when a problem stops every command (it lists all problems); problems inside named
    entries (targets, services, setups, ...) are listed as such: they stop only what uses them."""
    def resolve(strict):
        if path:
            return loader.resolve(loader.read_layers(None, only_file=full), strict=strict)
        from . import load_config
        return load_config(cwd=session.cwd or os.getcwd(), session=session.values, strict=strict)

    full = os.path.abspath(os.path.expanduser(path)) if path else None
    try:
        cfg = resolve(strict=False)
    except ConfigError:
        resolve(strict=True)  # raises with every problem, the entries' included
        raise
    what = full or ", ".join(layer.file or f"<{layer.name}>" for layer in cfg.layers)
    entry_problems = [(entry, p) for entry, ps in cfg.deferred.items() for p in ps]
    if entry_problems:
        n = len(entry_problems)
        text = (f"config loads: {what}\n{n} problem{'s' * (n != 1)} in named entries; each stops only "
                "a command that uses its entry:")
        text += "".join(f"\n  problem: {p}" for _entry, p in entry_problems)
    else:
        text = f"config OK: {what}"
    text += "".join(f"\n  warning: {w}" for w in cfg.warnings if not _entry_warning(w, entry_problems))
    text += "".join(f"\n  note: {n}" for n in cfg.notes)
    return Shown(text)


def _entry_warning(text: str, entry_problems) -> bool:
    return any(text.startswith(str(p)) for _entry, p in entry_problems)


def create(session, kind: str, path: str | None = None, force: bool = False) -> Shown:
    """Write the commented template ``kind`` to ``path`` (default ./xt_config.yaml)."""
    from .validate import did_you_mean
    known = templates()
    if kind not in known:
        raise ConfigError(f"unknown template {kind!r}",
                          hint=did_you_mean(kind, known) or f"choose {', '.join(known)}")
    path = path or loader.local_config_path(session.cwd)
    if os.path.exists(path) and not force:
        raise ConfigError(f"{path} exists; not overwritten", hint=f"add {switch('force')} to replace it")
    with open(known[kind], encoding="utf-8") as fh:
        text = fh.read()
    from ...runner.runner import write_atomic
    try:
        write_atomic(path, text, mode=0o666, keep_existing=True)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}",
                          hint=f"pick another {param('path')}") from None
    session.invalidate()
    return Shown(f"wrote the {kind} template to {path} — edit it, then %xt_config --validate")


__all__ = ["show", "get", "explain", "set_values", "reset", "save", "validate", "create", "Shown",
           "mask", "typed", "TEMPLATE_KINDS", "Problem"]
