"""Run a Python function as a job: ``xt.submit(fn, *args, hp=..., **kwargs)``.

No second protocol: the call becomes a cell whose one input is the pickled call and whose one
output is the return value, so every target, the ticket signing and the verified results path
are the cell's own. The run calls ``fn(*args, **kwargs, **hp)`` (``hp`` is the dict of the run's
hyperparameters the runner gives every cell).
"""
from __future__ import annotations

from ..errors import JobError
from . import sweeps

#: the cell's input (``(fn, args, kwargs)``) and output (the return value)
CALL, RESULT = "xt_call", "xt_result"
CELL = (f"xt_fn, xt_args, xt_kwargs = {CALL}\n"
        f"{RESULT} = xt_fn(*xt_args, **xt_kwargs, **hp)\n")


def check_call(fn, args: tuple, kwargs: dict, hp_names) -> str:
    """Refuse at submit what would fail every run: not callable, an hp name the function cannot
    take, arguments that do not bind. Returns the function's name (the job's default name)."""
    if not callable(fn):
        raise JobError(f"fn must be callable, got {type(fn).__name__}")
    label = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) \
        or type(fn).__name__
    import inspect
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: the run reports a bad call
        return label
    params = sig.parameters.values()
    any_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for name in hp_names:
        if name in kwargs:
            raise JobError(f"hp[{name!r}]: also given as the keyword argument {name}=")
        if not any_kw and name not in named:
            raise JobError(f"hp[{name!r}]: {label}() has no parameter {name!r}",
                           hint="hyperparameters are passed as keyword arguments")
    try:
        sig.bind(*args, **kwargs, **dict.fromkeys(hp_names))
    except TypeError as err:
        raise JobError(f"{label}(): {err}") from None
    return label


def submit(session, fn, args: tuple, kwargs: dict, *, hp=None, hp_config=None, name=None,
           **options):
    """Submit ``fn(*args, **kwargs)`` (one run per hyperparameter point) as a job; a Job."""
    from .submit import run_cell
    specs = sweeps.load_specs(hp, hp_config)
    label = check_call(fn, tuple(args), dict(kwargs), list(specs))
    return run_cell(session, CELL, {CALL: (fn, tuple(args), dict(kwargs))}, inputs=[CALL],
                    outputs=[RESULT], hp=hp, hp_config=hp_config, name=name or label, **options)
