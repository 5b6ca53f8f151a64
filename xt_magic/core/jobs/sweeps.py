"""Hyperparameter sweeps: ``hp`` dicts, ``--hp`` words and XT hp-config files -> one hparams dict
per run.

API: ``hp={"lr": [0.01, 0.1], "seed": "$randint(0, 9)", "opt": "adam"}`` (a list is the values, a
``$distribution`` string is one, anything else a constant). Magic: ``--hp lr=[0.01,0.1]
layers=[2,4] act=[relu,tanh] seed=$randint(0,9) wd=$loguniform(1e-5,1e-2)``, parsed by
``parse_hp_args`` into such a dict. One parser of ``$distribution`` text (``_dist``) serves all
three.
File (XT format)::

    hyperparameter-distributions:
      lr: [0.01, 0.03, 0.1]
      drop: $uniform(0, 0.5)
      batch-size: [32, 64]
      optimizer: adam, sgd        # a plain YAML scalar is a constant, as XT took it

Distributions: ``$linspace(a,b,n)`` ``$randint(a,b)`` ``$uniform(a,b)`` ``$loguniform(a,b)``
``$normal(mu,sigma)`` ``$lognormal(mu,sigma)`` ``$choice(v,...)`` and the q-variants
``$quniform(a,b,q)`` ``$qloguniform(a,b,q)`` ``$qnormal(mu,sigma,q)`` ``$qlognormal(mu,sigma,q)``.
Grid enumerates lists, ``$linspace`` and ``$choice`` (other distributions are sampled once per
point); random samples ``runs`` points. Everything is drawn from one ``random.Random(seed)``, so the
same spec and seed always give the same runs.

Names are kept as given (XT's files use ``batch-size``); how a run's cell sees them is
``runner.hp_namespace``. The number of runs is known before any point is made, so a sweep over
``hyperparameter-search.max-runs-limit`` is refused at once.
"""
from __future__ import annotations

import ast
import datetime
import math
import random
import re
import reprlib
from dataclasses import dataclass

from ..errors import JobError
from ..naming import assign, param

_DIST = re.compile(r"^\$(\w+)\((.*)\)$", re.S)
_ARITY = {"linspace": (3, 3), "randint": (0, 2), "uniform": (2, 2), "loguniform": (2, 2),
          "normal": (2, 2), "lognormal": (2, 2), "choice": (1, None), "quniform": (3, 3),
          "qloguniform": (3, 3), "qnormal": (3, 3), "qlognormal": (3, 3)}
SCALARS = (int, float, str, bool, type(None))
#: XT's ``$randint()`` with no arguments drew from 0..65534
RANDINT_DEFAULT = (0, 65534)
#: ``hyperparameter-search.max-runs-limit`` when the config does not say
MAX_RUNS_LIMIT = 100_000
# the shape of a command-line option name (XT passed hyperparameters to scripts as --NAME=VALUE)
_HP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def hp_name_problem(name) -> str | None:
    """Why ``name`` cannot be a hyperparameter name (None when it can)."""
    if not isinstance(name, str) or not _HP_NAME.match(name):
        return (f"bad hyperparameter name {_short(name)}: letters, digits, '_', '-' and '.', "
                "starting with a letter or '_'")
    if name.startswith("__"):
        return f"bad hyperparameter name {_short(name)}: names starting with '__' are reserved"
    return None


@dataclass
class Dist:
    """A distribution: ``kind`` and its numeric (or, for choice, scalar) args."""

    kind: str
    args: tuple

    def __str__(self) -> str:
        return f"${self.kind}({', '.join(map(repr, self.args))})"

    def count(self) -> int | None:
        """How many values a grid enumerates (None when not enumerable)."""
        if self.kind == "linspace":
            return int(self.args[2])
        if self.kind == "choice":
            return len(self.args)
        return None

    def at(self, i: int):
        """The ``i``-th enumerable value, without making the others."""
        if self.kind == "choice":
            return self.args[i]
        a, b, n = self.args
        n = int(n)
        return a + (b - a) * i / (n - 1) if n > 1 else a

    def values(self) -> list | None:
        """All values when enumerable (grid), else None."""
        n = self.count()
        return None if n is None else [self.at(i) for i in range(n)]

    def sample(self, rng: random.Random):
        k, a = self.kind, self.args
        if k == "linspace" or k == "choice":
            return self.at(rng.randrange(self.count()))  # = rng.choice(values()), unmade
        if k == "randint":
            lo, hi = {0: RANDINT_DEFAULT, 1: (0, a and a[0])}.get(len(a), a)
            return rng.randint(int(lo), int(hi))
        base = k[1:] if k.startswith("q") else k
        if base == "uniform":
            v = rng.uniform(a[0], a[1])
        elif base == "loguniform":
            v = math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
        elif base == "normal":
            v = rng.gauss(a[0], a[1])
        else:  # lognormal
            v = math.exp(rng.gauss(a[0], a[1]))
        if k.startswith("q"):
            q = a[-1]
            v = round(v / q) * q
            if float(q).is_integer() and float(v).is_integer():
                v = int(v)
        return v


def _draw(name: str, dist: Dist, rng: random.Random):
    """One sample, or a one-line error when it leaves the float range."""
    try:
        value = dist.sample(rng)
    except (OverflowError, ValueError):
        value = math.inf
    if isinstance(value, float) and not math.isfinite(value):
        raise JobError(f"hyperparameter {name}={dist}: drew a value outside the float range",
                       hint="use smaller parameters")
    return value


def _literal(text: str):
    """A scalar from text: Python/JSON literal, else the bare word as a string."""
    text = text.strip()
    if not text:
        raise ValueError("empty value")
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if not re.fullmatch(r"[\w.+\-/:@]+", text):
            raise ValueError(f"{text!r} is not a number, string or bare word") from None
        return text
    if not isinstance(value, SCALARS):
        raise ValueError(f"{text!r} is not a scalar")
    return value


def _split(text: str) -> list[str]:
    """Split on top-level commas (quotes respected)."""
    out, cur, quote = [], "", None
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote, cur = ch, cur + ch
        elif ch == ",":
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if quote:
        raise ValueError("unclosed quote")
    if cur.strip() or out:
        out.append(cur)
    return out


def _dist(text: str) -> Dist | None:
    """``$kind(args)`` -> a checked Dist; None when ``text`` is not a distribution."""
    m = _DIST.match(text.strip())
    if not m:
        return None
    kind, body = m.group(1).lower(), m.group(2)
    if kind not in _ARITY:
        raise ValueError(f"unknown distribution ${kind} (known: "
                         + ", ".join("$" + k for k in _ARITY) + ")")
    args = tuple(_literal(a) for a in _split(body)) if body.strip() else ()
    lo, hi = _ARITY[kind]
    if len(args) < lo or (hi is not None and len(args) > hi):
        want = lo if lo == hi else f"{lo} to {hi if hi is not None else 'any'}"
        raise ValueError(f"${kind} takes {want} arguments, got {len(args)}")
    if kind == "choice":
        return Dist(kind, args)
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ValueError(f"${kind} arguments must be numbers")
    if not all(math.isfinite(a) for a in args):
        raise ValueError(f"${kind} arguments must be finite numbers")
    if kind == "linspace" and (not float(args[2]).is_integer() or args[2] < 1):
        raise ValueError("$linspace count n must be a whole number >= 1")
    if kind == "randint" and len(args) == 2 and int(args[0]) > int(args[1]):
        raise ValueError("$randint low is above high")
    if kind in ("loguniform", "qloguniform") and min(args[:2]) <= 0:
        raise ValueError(f"${kind} bounds must be > 0")
    if kind.startswith("q") and args[-1] <= 0:
        raise ValueError(f"${kind} step q must be > 0")
    return Dist(kind, args)


def parse_value(name: str, value):
    """One hp's spec (text from --hp, or a YAML value) -> list of values or a Dist."""
    try:
        if isinstance(value, list):
            if not value:
                raise ValueError("empty list")
            for v in value:
                if not isinstance(v, SCALARS):
                    raise ValueError(f"{v!r} is not a scalar")
            return list(value)
        if not isinstance(value, str):
            if isinstance(value, SCALARS):
                return [value]
            raise ValueError(f"{value!r} is not a list, scalar or $distribution")
        text = value.strip()
        dist = _dist(text)
        if dist is not None:
            return dist
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError("list is missing its closing ]")
            items = _split(text[1:-1])
            if not items:
                raise ValueError("empty list")
            return [_literal(i) for i in items]
        return [_literal(text)]
    except ValueError as err:
        raise JobError(f"bad hyperparameter {name}={value}: {err}") from None


def _yaml_scalar(value):
    """A YAML scalar as a run can hold it (JSON): dates become their text, as XT passed them."""
    if isinstance(value, (datetime.date, datetime.datetime)):
        return str(value)
    if isinstance(value, SCALARS):
        return value
    raise ValueError(f"{_short(value)} is not a scalar")


def _file_value(value):
    """An hp-config value: a list of scalars, a $distribution, else a constant, whatever its
    text (``a, b, c`` is one string, as XT took it)."""
    if isinstance(value, list):
        if not value:
            raise ValueError("empty list")
        return [_yaml_scalar(v) for v in value]
    if isinstance(value, dict):
        raise ValueError("a mapping is not a list, scalar or $distribution")
    if isinstance(value, str):
        dist = _dist(value)
        if dist is not None:
            return dist
    return [_yaml_scalar(value)]


def _parse_args(words: list[str], specs: dict, errors: list[str]) -> None:
    for word in words or []:
        name, eq, value = word.partition("=")
        name = name.strip().lstrip("-")
        if not eq:
            errors.append(f"--hp {word!r}: expected NAME=VALUES, e.g. lr=[0.01,0.1]")
            continue
        problem = hp_name_problem(name)
        if problem:
            errors.append(f"--hp {problem}")
        elif name in specs:
            errors.append(f"--hp hyperparameter {name!r} given twice")
        else:
            try:
                specs[name] = parse_value(name, value)
            except JobError as err:
                errors.append(f"--hp {err.message}")


def _load_file(path: str, errors: list[str]) -> dict:
    import yaml
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise JobError(f"cannot read hp-config {path}: {err.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise JobError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    node = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "hyperparameter-distributions":
                node = value  # the last one wins, as PyYAML's loader has it
    if not isinstance(node, yaml.MappingNode):
        raise JobError(f"{path}: expected a 'hyperparameter-distributions:' mapping")
    loader = yaml.SafeLoader("")
    specs: dict = {}
    for key_node, value_node in node.value:
        where = f"{path}:{key_node.start_mark.line + 1}"
        try:
            name = loader.construct_object(key_node, deep=True)
            value = loader.construct_object(value_node, deep=True)
        except yaml.YAMLError as err:
            errors.append(f"{where}: {str(err).splitlines()[0]}")
            continue
        problem = hp_name_problem(name)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        if name in specs:
            errors.append(f"{where}: {name}: given twice")
            continue
        try:
            specs[name] = _file_value(value)
        except ValueError as err:
            errors.append(f"{where}: {name}: bad value {_short(value)}: {err}")
    return specs


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _short(value) -> str:
    """A bounded repr: a YAML value may be nested deeply through aliases."""
    return _REPR.repr(value)


def _raise(errors: list[str]) -> None:
    if len(errors) == 1:
        raise JobError(errors[0])
    if errors:
        raise JobError(f"{len(errors)} problems in the sweep: " + "; ".join(errors))


def _dict_specs(hp, specs: dict, errors: list[str]) -> None:
    """The API's ``hp={"lr": [0.1, 0.2], "wd": "$loguniform(1e-5, 1e-2)", "opt": "adam"}``: a
    list (or tuple, range) is the values, a ``$distribution`` string is one, anything else a
    constant; a Dist (parsed ``--hp`` words) is taken as is."""
    if not isinstance(hp, dict):
        raise JobError(f"hp must be a dict such as {{'lr': [0.1, 0.2]}}, got {type(hp).__name__}")
    for name, value in hp.items():
        where = f"hp[{_short(name)}]"
        problem = hp_name_problem(name)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        if isinstance(value, Dist):
            specs[name] = value
            continue
        try:
            if hasattr(value, "tolist") and not isinstance(value, SCALARS):
                value = value.tolist()  # a numpy array or scalar: Python values, JSON-able
            if isinstance(value, (tuple, range)):
                value = list(value)
            if isinstance(value, list):
                value = [v.item() if hasattr(v, "item") and not isinstance(v, SCALARS) else v
                         for v in value]
            if isinstance(value, str) and value.strip().startswith("$") \
                    and _dist(value) is None:
                raise ValueError("not a $distribution such as $uniform(0, 1)")
            specs[name] = _file_value(value)
        except ValueError as err:
            errors.append(f"{where}: bad value {_short(value)}: {err}")


def parse_hp_args(words: list[str]) -> dict:
    """``["lr=[0.01,0.1]", "layers=[2,4]"]`` (the magic's ``--hp`` words) -> {name: list | Dist}
    (order kept), every problem in one error naming ``--hp``."""
    errors: list[str] = []
    specs: dict = {}
    _parse_args(words or [], specs, errors)
    _raise(errors)
    return specs


def load_hp_config(path: str) -> dict:
    """An XT hp-config file: ``hyperparameter-distributions:`` name -> list or $distribution."""
    return load_specs(None, path)


def load_specs(hp: dict | None, path: str | None) -> dict:
    """An ``hp`` dict (see ``_dict_specs``) and an hp-config file together (``hp`` wins); every
    problem in one error."""
    errors: list[str] = []
    specs: dict = {}
    if hp is not None:
        _dict_specs(hp, specs, errors)
    if path:
        for name, value in _load_file(path, errors).items():
            specs.setdefault(name, value)
    _raise(errors)
    return specs


def _sizes(specs: dict) -> dict:
    """name -> number of grid values (None: sampled)."""
    return {k: (len(v) if isinstance(v, list) else v.count()) for k, v in specs.items()}


def _count_text(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{int(math.log10(n))}"


def run_count(specs: dict, search: str | None, runs: int | None, repeat: int | None) -> int:
    """How many runs ``expand`` makes, without making them."""
    sizes = _sizes(specs)
    if search == "grid":
        size = math.prod(n for n in sizes.values() if n is not None)
        size = min(size, runs) if runs else size
    else:
        size = runs or 1
    return size * (repeat or 1)


def _grid_point(i: int, names: list[str], specs: dict, sizes: dict) -> dict:
    """The ``i``-th point of the grid in itertools.product order (the last name varies fastest)."""
    point = {}
    for name in reversed(names):
        i, j = divmod(i, sizes[name])
        v = specs[name]
        point[name] = v[j] if isinstance(v, list) else v.at(j)
    return point


def expand(specs: dict, search: str | None = None, runs: int | None = None,
           repeat: int | None = None, seed: int = 0,
           limit: int | None = None) -> tuple[str | None, list[dict]]:
    """(search actually used, list of hparams dicts, one per run).

    ``limit``: most runs allowed (``hyperparameter-search.max-runs-limit``), checked before any
    point is made."""
    if repeat is not None and repeat < 1:
        raise JobError(f"{param('repeat')} must be >= 1, got {repeat}")
    if runs is not None and runs < 1:
        raise JobError(f"{param('runs')} must be >= 1, got {runs}")
    rng = random.Random(seed)
    sizes = _sizes(specs)
    if not specs:
        if search:
            raise JobError(f"{assign('search', search)} needs hyperparameters "
                           f"({param('hp')} or {param('hp_config')})")
        search = None
    elif search is None:
        search = "random" if runs or any(n is None for n in sizes.values()) else "grid"
    if search not in (None, "grid", "random"):
        raise JobError(f"search {search!r} is not supported here (use grid or random)")
    if search == "random" and not runs:
        raise JobError(f"random search needs {assign('runs', 'N')}")
    total = run_count(specs, search, runs, repeat)
    limit = MAX_RUNS_LIMIT if limit is None else int(limit)
    if total > limit:
        raise JobError(f"the sweep makes {_count_text(total)} runs, over the limit of {limit:,}",
                       key="hyperparameter-search.max-runs-limit",
                       hint=f"narrow the grid, use {assign('runs', 'N')}, or raise the limit")
    if search is None:
        points = [{} for _ in range(runs or 1)]
    elif search == "grid":
        names = [k for k, n in sizes.items() if n is not None]
        points = []
        for i in range(total // (repeat or 1)):
            point = _grid_point(i, names, specs, sizes)
            for k, v in specs.items():  # non-enumerable: sampled once per grid point
                if k not in point:
                    point[k] = _draw(k, v, rng)
            points.append({k: point[k] for k in specs})
    else:
        points = [{k: (rng.choice(v) if isinstance(v, list) else _draw(k, v, rng))
                   for k, v in specs.items()} for _ in range(runs)]
    return search, [dict(p) for p in points for _ in range(repeat or 1)]
