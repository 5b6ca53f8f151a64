"""Hyperparameter sweeps: ``--hp`` specs and XT hp-config files -> one hparams dict per run.

Inline: ``lr=[0.01,0.1] layers=[2,4] act=[relu,tanh] seed=$randint(0,9) wd=$loguniform(1e-5,1e-2)``.
File (XT format)::

    hyperparameter-distributions:
      lr: [0.01, 0.03, 0.1]
      drop: $uniform(0, 0.5)

Distributions: ``$linspace(a,b,n)`` ``$randint(a,b)`` ``$uniform(a,b)`` ``$loguniform(a,b)``
``$normal(mu,sigma)`` ``$lognormal(mu,sigma)`` ``$choice(v,...)`` and the q-variants
``$quniform(a,b,q)`` ``$qloguniform(a,b,q)`` ``$qnormal(mu,sigma,q)`` ``$qlognormal(mu,sigma,q)``.
Grid enumerates lists, ``$linspace`` and ``$choice`` (other distributions are sampled once per
point); random samples ``runs`` points. Everything is drawn from one ``random.Random(seed)``, so the
same spec and seed always give the same runs.
"""
from __future__ import annotations

import ast
import itertools
import keyword
import math
import random
import re
from dataclasses import dataclass

from ..errors import JobError

_DIST = re.compile(r"^\$(\w+)\((.*)\)$", re.S)
_ARITY = {"linspace": (3, 3), "randint": (0, 2), "uniform": (2, 2), "loguniform": (2, 2),
          "normal": (2, 2), "lognormal": (2, 2), "choice": (1, None), "quniform": (3, 3),
          "qloguniform": (3, 3), "qnormal": (3, 3), "qlognormal": (3, 3)}
SCALARS = (int, float, str, bool, type(None))


def check_name(name: str, what: str = "hyperparameter") -> str:
    """A name that becomes a variable in the cell: an identifier, not a keyword or dunder."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
            or name.startswith("__"):
        raise JobError(f"bad {what} name {name!r}: must be a Python identifier")
    return name


@dataclass
class Dist:
    """A distribution: ``kind`` and its numeric (or, for choice, scalar) args."""

    kind: str
    args: tuple

    def values(self) -> list | None:
        """All values when enumerable (grid), else None."""
        if self.kind == "linspace":
            a, b, n = self.args
            n = int(n)
            return [a + (b - a) * i / (n - 1) for i in range(n)] if n > 1 else [a]
        if self.kind == "choice":
            return list(self.args)
        return None

    def sample(self, rng: random.Random):
        k, a = self.kind, self.args
        if k == "linspace" or k == "choice":
            return rng.choice(self.values())
        if k == "randint":
            lo, hi = {0: (0, 2**31 - 1), 1: (0, a and a[0])}.get(len(a), a)
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
    except (ValueError, SyntaxError):
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
        m = _DIST.match(text)
        if m:
            kind, body = m.group(1).lower(), m.group(2)
            if kind not in _ARITY:
                raise ValueError(f"unknown distribution ${kind} (known: "
                                 + ", ".join("$" + k for k in _ARITY) + ")")
            args = tuple(_literal(a) for a in _split(body)) if body.strip() else ()
            lo, hi = _ARITY[kind]
            if len(args) < lo or (hi is not None and len(args) > hi):
                want = lo if lo == hi else f"{lo} to {hi if hi is not None else 'any'}"
                raise ValueError(f"${kind} takes {want} arguments, got {len(args)}")
            if kind != "choice" and not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                            for a in args):
                raise ValueError(f"${kind} arguments must be numbers")
            if kind in ("loguniform", "qloguniform") and min(args[:2]) <= 0:
                raise ValueError(f"${kind} bounds must be > 0")
            if kind.startswith("q") and args[-1] <= 0:
                raise ValueError(f"${kind} step q must be > 0")
            return Dist(kind, args)
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


def parse_hp_args(words: list[str]) -> dict:
    """``["lr=[0.01,0.1]", "layers=[2,4]"]`` -> {name: list | Dist} (order kept)."""
    specs: dict = {}
    for word in words or []:
        name, eq, value = word.partition("=")
        name = name.strip().lstrip("-")
        if not eq:
            raise JobError(f"bad --hp {word!r}: expected NAME=VALUES, e.g. lr=[0.01,0.1]")
        check_name(name)
        if name in specs:
            raise JobError(f"hyperparameter {name!r} given twice")
        specs[name] = parse_value(name, value)
    return specs


def load_hp_config(path: str) -> dict:
    """An XT hp-config file: ``hyperparameter-distributions:`` name -> list or $distribution."""
    import yaml
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as err:
        raise JobError(f"cannot read hp-config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise JobError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    dists = data.get("hyperparameter-distributions") if isinstance(data, dict) else None
    if not isinstance(dists, dict):
        raise JobError(f"{path}: expected a 'hyperparameter-distributions:' mapping")
    specs = {}
    for name, value in dists.items():
        check_name(str(name))
        specs[str(name)] = parse_value(str(name), value)
    return specs


def expand(specs: dict, search: str | None = None, runs: int | None = None,
           repeat: int | None = None, seed: int = 0) -> tuple[str | None, list[dict]]:
    """(search actually used, list of hparams dicts, one per run)."""
    if repeat is not None and repeat < 1:
        raise JobError(f"--repeat must be >= 1, got {repeat}")
    if runs is not None and runs < 1:
        raise JobError(f"--runs must be >= 1, got {runs}")
    rng = random.Random(seed)
    if not specs:
        if search:
            raise JobError(f"--search {search} needs hyperparameters (--hp or --hp-config)")
        points = [{} for _ in range(runs or 1)]
        search = None
    else:
        enumerable = {k: (v if isinstance(v, list) else v.values()) for k, v in specs.items()}
        if search is None:
            search = "random" if runs or any(v is None for v in enumerable.values()) else "grid"
        if search == "grid":
            names = [k for k, v in enumerable.items() if v is not None]
            points = []
            for combo in itertools.product(*(enumerable[k] for k in names)):
                point = dict(zip(names, combo))
                for k, v in specs.items():  # non-enumerable: sampled once per grid point
                    if k not in point:
                        point[k] = v.sample(rng)
                points.append({k: point[k] for k in specs})
            if runs:
                points = points[:runs]
        elif search == "random":
            if not runs:
                raise JobError("random search needs --runs N")
            points = [{k: (rng.choice(v) if isinstance(v, list) else v.sample(rng))
                       for k, v in specs.items()} for _ in range(runs)]
        else:
            raise JobError(f"search {search!r} is not supported here (use grid or random)")
    return search, [dict(p) for p in points for _ in range(repeat or 1)]
