"""Helpers shared by the widgets: safe callbacks and displaying a widget-owning object."""
from __future__ import annotations

import functools
import html
import traceback


def safe(method):
    """Wrap a widget callback so it never raises into the comm: the error goes to ``self.out``
    (an ipywidgets Output) and ``self.message`` (an HTML line), as one line for XTErrors."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a callback must never raise into the comm
            show_error(self, err)
    return wrapper


def show_error(owner, err: BaseException) -> None:
    from ..core.errors import XTError
    text = str(err) if isinstance(err, XTError) else f"{type(err).__name__}: {err}"
    try:
        owner.message.value = f"<span style='color:#b00020'>error: {html.escape(text)}</span>"
        if not isinstance(err, XTError):  # an XTError is the one line above, not said twice
            with owner.out:
                traceback.print_exception(type(err), err, err.__traceback__)
    except Exception:  # the widget itself is broken; nothing left to show it in
        pass


class WidgetView:
    """Base: a Python object that displays as its ``self.widget`` (a Box)."""

    widget = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def note(text: str, color: str = "#666") -> str:
    return f"<span style='color:{color};font-size:90%'>{html.escape(text)}</span>"
