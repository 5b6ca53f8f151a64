"""Errors raised by xt_magic.

Every error a user can cause is an :class:`XTError`. In a notebook it renders as one or two lines
(IPython calls ``_render_traceback_``); set ``XT_TRACEBACK=1`` or ``internal.stack-trace: true``
to get the full traceback instead.
"""
from __future__ import annotations

import os
import traceback

__all__ = [
    "XTError", "ConfigError", "AuthError", "StoreError", "TargetError", "JobError",
    "MissingDependencyError", "require", "Problem", "full_tracebacks", "ConfigWarning",
]

_FULL_TRACEBACKS = False


def full_tracebacks(on: bool | None = None) -> bool:
    """Get (or set) whether XTError shows the full traceback in notebooks."""
    global _FULL_TRACEBACKS
    if on is not None:
        _FULL_TRACEBACKS = bool(on)
    return _FULL_TRACEBACKS or os.environ.get("XT_TRACEBACK", "") not in ("", "0", "false")


class Problem:
    """One validation problem: where it is, which key, what is wrong, and a hint."""

    __slots__ = ("file", "line", "column", "key", "message", "hint")

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, key: str | None = None, hint: str | None = None):
        self.message, self.file, self.line, self.column, self.key, self.hint = (
            message, file, line, column, key, hint)

    def location(self) -> str:
        if not self.file:
            return ""
        loc = str(self.file)
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return loc

    def __str__(self) -> str:
        parts = [p for p in (self.location(), self.key) if p]
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"


class ConfigWarning(UserWarning):
    """A config problem that does not stop the current command (shown once per config change)."""


class XTError(Exception):
    """Base of every error xt_magic raises on purpose.

    ``message`` is one line; ``hint`` says what to do about it.
    """

    def __init__(self, message: str, *, hint: str | None = None, file: str | None = None,
                 line: int | None = None, key: str | None = None):
        self.message, self.hint, self.file, self.line, self.key = message, hint, file, line, key
        super().__init__(self._one_line())

    def _one_line(self) -> str:
        prefix = ""
        if self.file:
            prefix = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        if self.key:
            prefix += f"{self.key}: "
        text = prefix + self.message
        if self.hint:
            text += f" — {self.hint}"
        return text

    def _render_traceback_(self):  # IPython hook: short message instead of a traceback
        if full_tracebacks():
            return traceback.format_exception(type(self), self, self.__traceback__)
        return [f"{type(self).__name__}: {self}"]


class ConfigError(XTError):
    """A config file or value is wrong. ``problems`` holds every problem found at once."""

    def __init__(self, message: str, *, problems: list[Problem] | None = None, **kw):
        self.problems = list(problems or [])
        if self.problems and message is None:
            message = str(self.problems[0])
        super().__init__(message, **kw)

    def _one_line(self) -> str:
        head = super()._one_line()
        if len(self.problems) > 1 or (self.problems and str(self.problems[0]) not in head):
            return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        return head


class AuthError(XTError):
    """Login, token or vault access failed."""


class StoreError(XTError):
    """Reading or writing the artifact store failed."""


class DamagedObject(StoreError):
    """A store object exists but cannot be used (not valid JSON, the wrong shape, a folder where a
    file belongs, unreadable). Names the object; retrying does not help."""


class TargetError(XTError):
    """A compute target rejected or lost work."""


class JobError(XTError):
    """A job or run request is wrong, or a run failed."""


class RunFailed(JobError):
    """A run's cell raised: the remote exception type and message, with the remote traceback."""

    def __init__(self, run: str, error: dict | None, reason: str | None = None,
                 failed: int = 1, total: int = 1):
        self.run, self.error, self.failed, self.total = run, error or {}, failed, total
        self.remote_type = self.error.get("type") or "Error"
        self.remote_message = self.error.get("message") or reason or "failed"
        self.remote_traceback = self.error.get("traceback") or ""
        many = f"{failed} of {total} runs failed; the first, " if total > 1 else ""
        super().__init__(f"{many}run {run} failed: {self.remote_type}: {self.remote_message}")

    def _render_traceback_(self):
        tb = self.remote_traceback.rstrip("\n")
        lines = [f"{type(self).__name__}: {JobError.__str__(self)}"]
        if tb:
            lines += ["", f"Remote traceback (run {self.run}):"] + tb.splitlines()
        return lines

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip("\n")
        return text



class MissingDependencyError(XTError):
    """An optional package is not installed; names the pip extra that brings it."""

    def __init__(self, package: str, extra: str, feature: str = ""):
        self.package, self.extra = package, extra
        what = f" for {feature}" if feature else ""
        super().__init__(f"{package} is needed{what} but is not installed",
                         hint=f"pip install 'xt-magic[{extra}]'")


def require(module: str, package: str, extra: str, feature: str = ""):
    """``import module``, or one MissingDependencyError naming the pip extra (checked before the
    work starts, so a missing SDK is one line, not a failure per method or per run)."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(package, extra, feature) from err
