"""Read config files with line numbers, deep-merge the layers with provenance, substitute values."""
from __future__ import annotations

import copy
import getpass
import os
import re
from typing import Any

from ..errors import ConfigError, Problem
from ..paths import xt_home
from .resolved import Origin, ResolvedConfig, VaultRef, split_key

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULTS = os.path.join(HERE, "defaults.yaml")
LAYERS = ("defaults", "user", "local", "session", "call")

Lines = dict  # key path tuple -> 1-based line


def user_config_path() -> str:
    return os.path.expanduser(os.environ.get("XT_USER_CONFIG") or os.path.join(xt_home(), "xt_config.yaml"))


def local_config_path(cwd: str | None) -> str:
    return os.path.join(cwd or os.getcwd(), "xt_config.yaml")


def files(cwd: str | None) -> list[tuple[str, str]]:
    """(layer, path) of every file layer, lowest first."""
    return [("defaults", DEFAULTS), ("user", user_config_path()), ("local", local_config_path(cwd))]


# ---- reading ---------------------------------------------------------------------------------

def yaml_rt():
    """A round-trip ruamel YAML (keeps comments and line numbers; rejects duplicate keys)."""
    from ruamel.yaml import YAML
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = True
    return yaml


#: Most values (mappings, lists, scalars) one config file may expand to. Aliases are expanded when
#: the document becomes plain data, so a few hundred bytes of nested aliases ("billion laughs")
#: would otherwise take minutes and gigabytes; real configs have a few thousand values.
MAX_VALUES = 100_000


class _Budget:
    __slots__ = ("left", "file", "active")

    def __init__(self, file: str | None):
        self.left, self.file, self.active = MAX_VALUES, file, set()

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _fail(f"YAML aliases expand to more than {MAX_VALUES:,} values", self.file)


def _fail(message: str, file: str | None, line: int | None = None) -> ConfigError:
    problem = Problem(message, file=file, line=line)
    return ConfigError(str(problem), problems=[problem])


def _plain(node: Any, path: tuple, lines: Lines, budget: _Budget) -> Any:
    """ruamel round-trip node -> plain Python, recording the line of every key and list item."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    budget.spend()
    if isinstance(node, (dict, list, tuple)):
        if id(node) in budget.active:
            raise _fail(f"recursive YAML alias at {'.'.join(map(str, path)) or 'the top'}", budget.file)
        budget.active.add(id(node))
        try:
            return _plain_container(node, path, lines, budget, CommentedMap, CommentedSeq)
        finally:
            budget.active.discard(id(node))
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return bool(node) if type(node).__name__ == "ScalarBoolean" else int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _plain_container(node, path, lines, budget, CommentedMap, CommentedSeq):
    if isinstance(node, CommentedMap):
        out = {}
        for raw, value in node.items():
            key = str(raw)  # XT keys are strings; `10: x` or `true: x` become "10", "True"
            try:
                lines[path + (key,)] = node.lc.key(raw)[0] + 1
            except Exception:  # keys of merged anchors have no position
                pass
            out[key] = _plain(value, path + (key,), lines, budget)
        return out
    if isinstance(node, dict):
        return {str(k): _plain(v, path + (str(k),), lines, budget) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        out = []
        for i, value in enumerate(node):
            try:
                lines[path + (i,)] = node.lc.item(i)[0] + 1
            except Exception:
                pass
            out.append(_plain(value, path + (i,), lines, budget))
        return out
    return [_plain(v, path + (i,), lines, budget) for i, v in enumerate(node)]


def _last_wins(node: Any, file: str, path: tuple, warnings: list[str], seen: set) -> None:
    """Drop all but the last of repeated mapping keys, as PyYAML (and so XT) did, with a warning
    naming both lines. Works on the composed node graph, before anything is constructed."""
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        last: dict = {}
        for i, (key, _value) in enumerate(node.value):
            if not isinstance(key, ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                # ("? [a]: ..."): no config key is one, and a list inside one cannot be hashed
                where = ".".join(path) or "the top level"
                problem = Problem(f"YAML error: a key in {where} is a list or mapping, not a name",
                                  file=file, line=key.start_mark.line + 1)
                raise ConfigError(str(problem), problems=[problem])
            name = key.value if isinstance(key.value, str) else None
            if name is None or key.tag == "tag:yaml.org,2002:merge":
                continue
            if name in last:
                first = node.value[last[name]][0].start_mark.line + 1
                where = ".".join(path + (name,))
                warnings.append(f"{file}:{key.start_mark.line + 1}: {where}: repeated key (also on line "
                                f"{first}); the last one is used, as XT did")
            last[name] = i
        keep = set(last.values())
        node.value = [kv for i, kv in enumerate(node.value)
                      if i in keep or not isinstance(kv[0].value, str) or kv[0].tag == "tag:yaml.org,2002:merge"]
        for key, value in node.value:
            _last_wins(value, file, path + (str(key.value),), warnings, seen)
    elif isinstance(node, SequenceNode):
        for i, value in enumerate(node.value):
            _last_wins(value, file, path + (str(i),), warnings, seen)


def load_rt(text: str, file: str) -> tuple[Any, list[str]]:
    """Parse YAML text -> (round-trip document, warnings about repeated keys), or raise
    ConfigError naming file:line:col."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    yaml = yaml_rt()
    warnings: list[str] = []
    try:
        node = yaml.compose(text)
        if node is None:
            return None, warnings
        _last_wins(node, file, (), warnings, set())
        return yaml.constructor.construct_document(node), warnings
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = " ".join(str(p).strip() for p in (err.context, err.problem) if p)
        problem = Problem(f"YAML error: {what}", file=file, line=mark.line + 1 if mark else None,
                          column=mark.column + 1 if mark else None)
        raise ConfigError(str(problem), problems=[problem]) from None
    except (YAMLError, RecursionError) as err:
        problem = Problem(f"YAML error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                          file=file)
        raise ConfigError(str(problem), problems=[problem]) from None


def parse_text(text: str, file: str) -> Any:
    """Parse YAML text -> round-trip document, or raise ConfigError naming file:line:col."""
    return load_rt(text, file)[0]


def read_text(text: str, file: str) -> tuple[dict, Lines, list[str]]:
    """Parse one config file's text -> (plain dict, {key path: line}, warnings)."""
    doc, warnings = load_rt(text, file)
    if doc is None:
        return {}, {}, warnings
    if not isinstance(doc, dict):
        problem = Problem(f"a config file must be a mapping of sections, got {type(doc).__name__}",
                          file=file, line=1)
        raise ConfigError(str(problem), problems=[problem])
    lines: Lines = {}
    return _plain(doc, (), lines, _Budget(file)), lines, warnings


_CACHE: dict[str, tuple] = {}


def read_file(path: str) -> tuple[dict, Lines, list[str]] | None:
    """Read a config file (cached by mtime); None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    stamp = (stat.st_mtime_ns, stat.st_size)
    hit = _CACHE.get(path)
    if hit and hit[0] == stamp:
        return copy.deepcopy(hit[1])
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as err:
        problem = Problem(f"cannot read config file: {err}", file=path)
        raise ConfigError(str(problem), problems=[problem]) from None
    # only the shipped defaults are kept on disk: a user's file may hold a literal secret
    result = _disk_cached(path, text) if path == DEFAULTS else read_text(text, path)
    _CACHE[path] = (stamp, copy.deepcopy(result))
    return result


def _disk_cached(path: str, text: str) -> tuple[dict, Lines, list[str]]:
    """``read_text``, remembered across kernels under the sha256 of path and text: the
    round-trip YAML parse that finds each key's line costs a new kernel ~60 ms for the
    defaults."""
    import hashlib
    import json
    from .cache import cache_path, cache_write
    cached = cache_path("config-file", hashlib.sha256(
        f"{path}\0{text}".encode("utf-8", "surrogatepass")).hexdigest() + ".json")
    try:
        with open(cached, encoding="utf-8") as fh:
            data, lines, warnings = json.load(fh)
        return data, {tuple(key): line for key, line in lines}, warnings
    except (OSError, ValueError, TypeError):
        pass
    data, lines, warnings = read_text(text, path)
    try:
        cache_write(cached, json.dumps([data, [[list(k), v] for k, v in lines.items()],
                                         warnings]))
    except (TypeError, ValueError):
        pass  # a value JSON cannot hold: parsed each time
    return data, lines, warnings


def dotted_to_nested(values: dict, base: dict) -> dict:
    """{"a.b-c.d": 1} -> {"a": {"b-c": {"d": 1}}}; segments with dots match existing keys of ``base``."""
    out: dict = {}
    for key, value in (values or {}).items():
        segs = split_key(str(key), base)
        if not segs:
            continue
        node = out
        for seg in segs[:-1]:
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
        node[segs[-1]] = copy.deepcopy(value)
    return out


# ---- merging ---------------------------------------------------------------------------------

def _record(origins: dict, value: Any, path: tuple, origin: Origin, lines: Lines) -> None:
    origins[path] = Origin(origin.layer, origin.file, lines.get(path, origin.line))
    if isinstance(value, dict):
        for key, sub in value.items():
            _record(origins, sub, path + (key,), origin, lines)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _record(origins, sub, path + (i,), origin, lines)


def _drop(origins: dict, path: tuple) -> None:
    n = len(path)
    for key in [k for k in origins if len(k) > n and k[:n] == path]:
        del origins[key]


def merge(dst: dict, origins: dict, src: dict, lines: Lines, layer: str, file: str | None,
          path: tuple = ()) -> None:
    """Deep-merge ``src`` into ``dst``: mappings merge, lists and scalars replace, null unsets."""
    for key, value in src.items():
        sub = path + (key,)
        origin = Origin(layer, file, lines.get(sub))
        if value is None and layer != "defaults":
            dst.pop(key, None)
            _drop(origins, sub)
            origins.pop(sub, None)
        elif isinstance(value, dict) and isinstance(dst.get(key), dict):
            origins[sub] = origin
            merge(dst[key], origins, value, lines, layer, file, sub)
        else:
            dst[key] = copy.deepcopy(value)
            _drop(origins, sub)
            _record(origins, value, sub, origin, lines)


# ---- substitution ----------------------------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def env_value(name: str) -> str | None:
    if name == "XT_HOME":
        return xt_home()
    return os.environ.get(name)


def substitute_str(text: str, path: tuple = ()) -> Any:
    """``$vault`` -> VaultRef; ``$username``; ``${ENV}`` (XT_HOME defaults to ~/.xt); leading ``~``.
    XT's ``$scriptdir``, ``$current_conda_env`` and ``$call`` are left for the runner."""
    if text.strip() == "$vault":
        service = str(path[1]) if len(path) >= 3 else str(path[-1] if path else "")
        return VaultRef(service, str(path[-1]) if path else None, ".".join(map(str, path)))
    if "$username" in text:
        try:
            user = getpass.getuser()
        except Exception:  # no login name in some containers
            user = os.environ.get("USER", "user")
        text = text.replace("$username", user)
    if "${" in text:
        text = _ENV.sub(lambda m: env_value(m.group(1)) if env_value(m.group(1)) is not None
                        else m.group(0), text)
    if text.startswith("~"):
        text = os.path.expanduser(text)
    return text


def substitute(value: Any, path: tuple = ()) -> Any:
    if isinstance(value, str):
        return substitute_str(value, path)
    if isinstance(value, dict):
        return {k: substitute(v, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, path + (i,)) for i, v in enumerate(value)]
    return value


# ---- layers ----------------------------------------------------------------------------------

class Layer:
    """One layer's raw data (before substitution) with the line of each key."""

    __slots__ = ("name", "file", "data", "lines", "warnings")

    def __init__(self, name: str, file: str | None, data: dict, lines: Lines,
                 warnings: list[str] | None = None):
        self.name, self.file, self.data, self.lines = name, file, data, lines
        self.warnings = list(warnings or [])

    def __repr__(self) -> str:
        return f"Layer({self.name!r}, {self.file!r})"


def read_layers(cwd: str | None, session: dict | None = None, overrides: dict | None = None,
                only_file: str | None = None) -> list[Layer]:
    """The layers, lowest first. ``only_file``: defaults + that one file (``--validate FILE``)."""
    problems: list[Problem] = []
    layers: list[Layer] = []
    sources = files(cwd) if only_file is None else [("defaults", DEFAULTS), ("file", only_file)]
    for name, path in sources:
        try:
            got = read_file(path)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        if got is None:
            if only_file is not None and name == "file":
                problems.append(Problem("no such config file", file=path))
            continue
        layers.append(Layer(name, path, *got))
    if problems:
        raise ConfigError(str(problems[0]) if len(problems) == 1 else
                          f"{len(problems)} problems in config files", problems=problems)
    base: dict = {}
    for layer in layers:
        merge(base, {}, layer.data, layer.lines, layer.name, layer.file)
    for name, values in (("session", session), ("call", overrides)):
        if values:
            nested = dotted_to_nested(values, base)
            layers.append(Layer(name, None, nested, {}))
            merge(base, {}, nested, {}, name, None)
    return layers


def resolve(layers: list[Layer], validate: bool = True, strict: bool = True) -> ResolvedConfig:
    """Merge and substitute ``layers``; with ``validate``, raise ConfigError for every problem
    (``strict``) or only for those every command meets (see ``validate.check``)."""
    data: dict = {}
    origins: dict = {}
    for layer in layers:
        merge(data, origins, layer.data, layer.lines, layer.name, layer.file)
    data = substitute(data)
    from .xt_compat import adapt
    notes = adapt(data, origins)
    warnings = [w for layer in layers for w in layer.warnings]
    deferred: dict = {}
    if validate:
        from .validate import check
        more, late, deferred = check(data, origins, layers, strict=strict)
        notes += more
        warnings += late
    return ResolvedConfig(data, origins, layers, notes, warnings, deferred)


def load(cwd: str | None, session: dict | None = None, overrides: dict | None = None,
         validate: bool = True, strict: bool = True) -> ResolvedConfig:
    return resolve(read_layers(cwd, session, overrides), validate=validate, strict=strict)
