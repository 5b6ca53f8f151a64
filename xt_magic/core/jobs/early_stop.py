"""Early termination policies: XT's ``early-stopping`` section, with Azure ML HyperDrive's rules.

Pure functions over metric histories (``[(step, value), ...]`` per run, in logging order), so the
rules are tested without any job; the search driver (search.py) applies them as metrics arrive.

A policy is evaluated for a run at each of its steps S with ``S >= delay-evaluation`` and
``S % evaluation-interval == 0``. Other runs take part at S when they have reached S (logged a
step >= S); a run's "value at S" is the last value it logged at a step <= S.

- bandit: best = the best value at S of the runs that reached S (this one included); the run stops
  when its value at S is worse than ``best / (1 + slack-factor)`` (maximize; ``best * (1 +
  slack-factor)`` when minimizing), or, with slack-factor 0, than ``best -/+ slack-amount``.
- median: the run stops when its best value up to S is worse than the median of the other runs'
  running averages (mean of their values at steps <= S).
- truncation: the runs that reached S are ranked by their value at S; the worst
  ``floor(n * truncation-percentage / 100)`` of them stop (a run is stopped when it is strictly
  worse than the worst value that is kept).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import JobError
from ..naming import param

POLICIES = ("bandit", "median", "truncation")


@dataclass(frozen=True)
class Policy:
    kind: str
    delay_evaluation: int = 10
    evaluation_interval: int = 1
    slack_factor: float = 0.0
    slack_amount: float = 0.0
    truncation_percentage: float = 5.0

    def due(self, step) -> bool:
        """Whether the policy is evaluated at ``step``."""
        if not isinstance(step, (int, float)) or not float(step).is_integer():
            return False
        step = int(step)
        return step >= self.delay_evaluation and step % max(1, self.evaluation_interval) == 0

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict | None) -> "Policy | None":
        return cls(**data) if data else None


@dataclass(frozen=True)
class Stop:
    """A policy's decision to stop a run."""

    policy: str
    step: int
    value: float
    threshold: float

    @property
    def reason(self) -> str:
        return (f"early stopped ({self.policy} at step {self.step}: {_num(self.value)} vs "
                f"{_num(self.threshold)})")


def _num(x: float) -> str:
    return f"{x:.6g}"


_KEYS = {"delay-evaluation": ("delay_evaluation", int, 0), "evaluation-interval":
         ("evaluation_interval", int, 1), "slack-factor": ("slack_factor", float, 0),
         "slack-amount": ("slack_amount", float, 0),
         "truncation-percentage": ("truncation_percentage", float, 0)}


def from_config(cfg, flag: str | None = None) -> Policy | None:
    """The job's policy: ``--early-stop`` wins over ``early-stopping.early-policy``; None = off."""
    kind = flag or cfg.get("early-stopping.early-policy") or "none"
    if kind == "none":
        return None
    if kind not in POLICIES:
        raise JobError(f"{param('early_stop') if flag else 'early stopping policy'} {kind!r} "
                       "is not known", key=None if flag else "early-stopping.early-policy",
                       hint="one of: none, " + ", ".join(POLICIES))
    values = {}
    for key, (attr, kind_of, low) in _KEYS.items():
        raw = cfg.get(f"early-stopping.{key}")
        if raw is None:
            continue
        try:
            value = kind_of(raw)
            if value < low or (key == "truncation-percentage" and value > 100):
                raise ValueError
        except (TypeError, ValueError):
            raise JobError(f"early-stopping.{key}: bad value {raw!r}",
                           key=f"early-stopping.{key}") from None
        values[attr] = value
    return Policy(kind, **values)


def steps_of(records: list, metric: str) -> list[tuple[int | float, float]]:
    """``[(step, value)]`` of ``metric`` from metrics.jsonl records; a record without a step
    counts as the next report (1, 2, ...)."""
    out = []
    for rec in records:
        if rec.get("kind", "metrics") != "metrics":
            continue
        value = (rec.get("values") or {}).get(metric)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            continue
        step = rec.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            step = len(out) + 1
        out.append((step, float(value)))
    return out


def value_at(history, step):
    """The last value logged at a step <= ``step`` (None before the first)."""
    found = None
    for s, v in history:
        if s <= step:
            found = v
    return found


def _reached(history, step) -> bool:
    return any(s >= step for s, _ in history)


def evaluate(policy: Policy, run: str, histories: dict, maximize: bool, step) -> Stop | None:
    """The decision for ``run`` at ``step`` given every run's history (None: keep going)."""
    mine = histories.get(run) or []
    value = value_at(mine, step)
    if value is None:
        return None
    worse = (lambda a, b: a < b) if maximize else (lambda a, b: a > b)
    others = {r: h for r, h in histories.items() if r != run and _reached(h, step)}
    step = int(step)
    if policy.kind == "bandit":
        at = [v for v in (value_at(h, step) for h in others.values()) if v is not None]
        best = (max if maximize else min)(at + [value])
        if policy.slack_factor:
            f = 1 + policy.slack_factor
            threshold = best / f if maximize else best * f
        else:
            threshold = best - policy.slack_amount if maximize else best + policy.slack_amount
        return Stop("bandit", step, value, threshold) if worse(value, threshold) else None
    if policy.kind == "median":
        averages = []
        for h in others.values():
            seen = [v for s, v in h if s <= step]
            if seen:
                averages.append(sum(seen) / len(seen))
        if not averages:
            return None
        averages.sort()
        mid = len(averages) // 2
        median = averages[mid] if len(averages) % 2 else (averages[mid - 1] + averages[mid]) / 2
        seen = [v for s, v in mine if s <= step]
        best = (max if maximize else min)(seen)
        return Stop("median", step, best, median) if worse(best, median) else None
    if policy.kind == "truncation":
        at = [v for v in (value_at(h, step) for h in others.values()) if v is not None] + [value]
        cut = int(len(at) * policy.truncation_percentage / 100)
        if cut < 1:
            return None
        ranked = sorted(at, reverse=not maximize)  # worst first
        kept_worst = ranked[cut]
        return Stop("truncation", step, value, kept_worst) if worse(value, kept_worst) else None
    raise JobError(f"early stopping policy {policy.kind!r} is not known")


def check(policy: Policy, run: str, histories: dict, maximize: bool, after=None) -> Stop | None:
    """The first stop among ``run``'s due steps after ``after`` (None: keep going)."""
    for step, _ in histories.get(run) or []:
        if (after is None or step > after) and policy.due(step):
            stop = evaluate(policy, run, histories, maximize, step)
            if stop is not None:
                return stop
    return None
