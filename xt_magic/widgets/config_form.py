"""ConfigForm: an editor for the resolved XT config, generated from the config schema.

One page per schema section, picked from a dropdown (16 tabs wrapped onto two rows); named-entry sections (compute-targets, setups, boxes, ...) get an entry
picker with add / rename / delete. A key added to ``core/config/schema.yaml`` appears here with no
widget code. Edits are pending until "Apply to session" (``api.config_set``) or "Save to
xt_config.yaml" (apply, then ``api.config_save``, which keeps the file's comments). Every edit is
validated at once; problems show next to the field with the key path. Secret values (``x-secret``)
never enter widget state: the field is a password box showing only whether a value is set.
"""
from __future__ import annotations

import html
import os
from typing import Any

from ._common import WidgetView, note, safe

# Fields whose value names an entry of another section: shown as dropdowns of existing names.
# (record or section, field) -> section it refers to.
REFERENCES = {
    ("target", "setup"): "setups", ("target", "docker"): "dockers",
    ("target", "azure-image"): "azure-batch-images", ("target", "service"): "external-services",
    ("target", "boxes"): "boxes", ("box", "setup"): "setups", ("docker", "registry"): "external-services",
    ("xt-services", "storage"): "external-services", ("xt-services", "vault"): "external-services",
    ("xt-services", "mongo"): "external-services", ("xt-services", "target"): "compute-targets",
}
UNSET = "(unset)"
LABEL_W, EDIT_W = "190px", "340px"


def _record_of(node: dict) -> str | None:
    """The $defs record name of a named-entry section (compute-targets -> target), else None."""
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "$ref" in extra:
        return extra["$ref"].rsplit("/", 1)[1]
    return None


def _key_prefix(problem_key: str) -> str:
    """``compute-targets.x.boxes[0]`` -> ``compute-targets.x.boxes`` (a field's key)."""
    return (problem_key or "").split("[", 1)[0]


class ConfigForm(WidgetView):
    """The config editor widget (``%xt_config --form``)."""

    def __init__(self, session=None, path: str | None = None):
        import ipywidgets as w
        from ..core.session import get_session
        self.w = w
        self.session = session or get_session()
        self.path = path                       # where Save writes (None: ./xt_config.yaml)
        self.pending: dict[str, Any] = {}      # dotted key -> typed value (None unsets)
        self.errors: dict[str, Any] = {}       # dotted key -> HTML widget for its message
        self.origins: dict[str, Any] = {}      # dotted key -> HTML widget for its provenance
        self.out = w.Output(layout=w.Layout(max_height="160px", overflow="auto"))
        self.message = w.HTML()
        self.problems = w.HTML()
        # width auto: a button is as wide as its label (a fixed width cut "Save to xt_con...")
        self.apply_button = w.Button(description="Apply to session", icon="check",
                                     tooltip="set the pending values for this kernel session",
                                     layout=w.Layout(width="auto", min_width="fit-content"))
        self.save_button = w.Button(description="Save to xt_config.yaml", icon="save",
                                    button_style="primary",
                                    tooltip="apply, then write the session values into "
                                            + (path or "./xt_config.yaml"),
                                    layout=w.Layout(width="auto", min_width="fit-content"))
        self.apply_button.on_click(self._on_apply)
        self.save_button.on_click(self._on_save)
        self.picker = w.Dropdown(description="section", layout=w.Layout(width="auto"))
        self.picker.add_class("xt-section-picker")
        self.tabs = w.Stack()  # the pages; the picker selects one
        style = w.HTML("<style>.xt-config-form .widget-label{overflow:visible;white-space:normal;"
                       "overflow-wrap:anywhere}.xt-config-form .xt-help{color:#666;font-size:90%;"
                       "line-height:1.2;white-space:normal}"
                       ".xt-config-form .jupyter-button{overflow:visible}</style>")
        self.widget = w.VBox([style, self.picker, self.tabs,
                              w.HBox([self.apply_button, self.save_button],
                                     layout=w.Layout(flex_flow="row wrap")),
                              self.message, self.problems, self.out],
                             layout=w.Layout(width="100%"))
        self.widget.add_class("xt-config-form")
        self.entry_editors: dict[str, EntryEditor] = {}
        self._cfg = None
        self.refresh()

    # -- model ------------------------------------------------------------------------------------
    def config(self):
        """The resolved config (read once per refresh); when it does not validate, the
        unvalidated merge (the form is where the problems get fixed: they are listed, and shown
        at their fields)."""
        if self._cfg is None:
            from ..core.errors import ConfigError
            try:
                self._cfg = self.session.config()
            except ConfigError:
                from ..core.config import load_config
                self._cfg = load_config(cwd=self.session.cwd or os.getcwd(),
                                        session=self.session.values, validate=False)
        return self._cfg

    def value(self, key: str) -> Any:
        """The value of ``key`` with the pending edits (a pending whole entry counts too)."""
        if key in self.pending:
            return self.pending[key]
        from ..core.config import split_key
        for prefix in sorted((k for k in self.pending if key.startswith(k + ".")), key=len, reverse=True):
            node = self.pending[prefix]
            for seg in key[len(prefix) + 1:].split("."):
                node = node.get(seg) if isinstance(node, dict) else None
            return node
        cfg = self.config()
        node = cfg.data
        for seg in split_key(key, cfg.data):
            if not isinstance(node, dict) or seg not in node:
                return None
            node = node[seg]
        return node

    def names(self, section: str) -> list[str]:
        data = self.config().data.get(section) or {}
        names = [n for n, v in data.items() if isinstance(v, dict)]
        for key, value in self.pending.items():
            parts = key.split(".")
            if parts[0] == section and len(parts) == 2:
                if value is None and parts[1] in names:
                    names.remove(parts[1])
                elif isinstance(value, dict) and parts[1] not in names:
                    names.append(parts[1])
        return names

    def provenance(self, key: str) -> str:
        if key in self.pending or any(key.startswith(k + ".") for k in self.pending):
            return "pending (not applied)"
        cfg = self.config()
        origin = cfg.origin(key) if key in cfg else None
        if origin is None:
            return "unset"
        where = os.path.basename(origin.file) if origin.file else ""
        return f"{origin.layer} {where}:{origin.line}" if origin.line else f"{origin.layer} {where}".strip()

    # -- building ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Rebuild from the schema and the current resolved config. Tabs are built when first
        shown (a form of every section at once is ~900 widgets, seconds to create)."""
        from ..core.config.validate import schema
        selected = self.tabs.selected_index or 0
        self._cfg = None
        self.errors.clear()
        self.origins.clear()
        self.sections = [(name, node) for name, node in schema()["properties"].items()
                         if not node.get("x-unused") and (node.get("properties") or _record_of(node))]
        self.built: set[str] = set()
        titles = [name for name, _ in self.sections]
        if list(self.picker.options) != titles:  # first build: the pages stay (front ends keep
            self.picker.unobserve_all("index")   # the selected page when only contents change)
            self.tabs.children = [self.w.VBox() for _ in self.sections]
            self.picker.options = titles
            self.picker.index = self.tabs.selected_index = min(selected, len(self.sections) - 1)
            self.picker.observe(lambda change: self.select(change["new"]), names="index")
        for box in self.tabs.children:
            box.children = []
        self.build_tab(self.tabs.selected_index, validate=False)
        self.validate()

    @property
    def titles(self) -> list[str]:
        return list(self.picker.options)

    @safe
    def select(self, index: int | None) -> None:
        """Show section ``index``'s page (built on first view)."""
        if index is None:
            return
        self.build_tab(index)
        self.tabs.selected_index = index

    @safe
    def build_tab(self, index: int | None, validate: bool = True) -> None:
        if index is None or self.sections[index][0] in self.built:
            return
        section, node = self.sections[index]
        self.built.add(section)
        record = _record_of(node)
        if record:
            editor = self.entry_editors.get(section) or EntryEditor(self, section, record)
            self.entry_editors[section] = editor
            editor.rebuild(validate=False)
            content = [editor.widget]
        else:
            content = [self.w.HTML(note(node.get("description", "")))] + [
                self.field(f"{section}.{k}", sub, (section, k))
                for k, sub in node["properties"].items() if not sub.get("x-unused")]
        self.tabs.children[index].children = content
        if validate:
            self.validate()

    def section(self, name: str):
        """The content of section ``name``'s tab (built now if it was not yet)."""
        index = [n for n, _ in self.sections].index(name)
        self.build_tab(index)
        return self.entry_editors.get(name) or self.tabs.children[index]

    def field(self, key: str, node: dict, ref_key: tuple, kind: str | None = None) -> Any:
        """One row: label, editor (by schema type), provenance, inline error, help line (for a
        target of ``kind``, that kind's description of the key)."""
        from ..core.config.validate import resolve_ref, secret_keys
        w = self.w
        node = resolve_ref(node)
        name = ref_key[1]
        value = self.value(key)
        refers = REFERENCES.get(ref_key)
        if name in secret_keys():
            editor = self._secret_editor(value)
        elif refers and node.get("type") == "array":
            options = self.names(refers)
            options += [v for v in (value or []) if v not in options]
            editor = w.SelectMultiple(options=options, value=tuple(value or ()), rows=min(4, max(2, len(options))))
        elif refers:
            options = self.names(refers)
            if refers == "external-services" and ref_key[0] == "target":
                from ..core.registry import backend_classes
                direct = [s for cls in backend_classes(self.config()).values() for s in cls.services]
                options = list(dict.fromkeys(direct)) + options
            if value not in (None, "") and value not in options:
                options.append(value)
            editor = w.Dropdown(options=[UNSET] + options, value=value if value else UNSET)
        elif "enum" in node:
            options = [str(c) for c in node["enum"]]
            editor = w.Dropdown(options=[UNSET] + options, value=str(value) if value is not None else UNSET)
        elif node.get("type") == "boolean":
            editor = w.Checkbox(value=bool(value), indent=False)
        elif node.get("type") == "object":
            from ..core.config.service import fmt, mask
            editor = w.Text(value=fmt(mask(value or {})) if value else "", placeholder="{KEY: VALUE}")
        else:
            from ..core.config.service import fmt
            shown = "" if value is None else (
                ", ".join(map(str, value)) if isinstance(value, list) else
                (value if isinstance(value, str) else fmt(value)))
            kinds = node.get("type", "")
            editor = w.Text(value=shown, placeholder=" or ".join(kinds) if isinstance(kinds, list) else kinds)
        editor.layout.width = EDIT_W
        editor.add_class("xt-field-" + key.replace(".", "--"))
        origin = w.HTML(note(self.provenance(key)), layout=w.Layout(width="230px"))
        error = w.HTML()
        self.origins[key], self.errors[key] = origin, error
        editor.observe(lambda change, k=key, n=node, s=name in secret_keys():
                       self._on_edit(k, n, change["new"], s), names="value")
        help_text = (node.get("x-kind-descriptions") or {}).get(kind) or node.get("description", "")
        label = w.Label(name, tooltip=help_text, layout=w.Layout(min_width=LABEL_W, width="auto"))
        label.add_class("xt-label")
        # the schema's description, visible under the editor: a full-width last item wraps
        help_html = w.HTML(f"<div class='xt-help'>{html.escape(help_text)}</div>",
                           layout=w.Layout(width="100%", padding=f"0 0 4px {LABEL_W}"))
        help_html.add_class("xt-help-" + key.replace(".", "--"))
        return w.HBox([label, editor, origin, error, help_html],
                      layout=w.Layout(flex_flow="row wrap", align_items="flex-start"))

    def _secret_editor(self, value):
        from ..core.config import VaultRef
        w = self.w
        if isinstance(value, VaultRef) or value == "$vault":
            hint = "$vault (read from the team's vault)"
        elif value:
            hint = "•••• set — type to replace"
        else:
            hint = "not set"
        return w.Password(value="", placeholder=hint)

    # -- editing ----------------------------------------------------------------------------------
    @safe
    def _on_edit(self, key: str, node: dict, new: Any, secret: bool) -> None:
        from ..core.config.service import typed
        if new == UNSET or (new == "" and not secret):
            value = None
        elif isinstance(new, tuple):
            value = list(new)
        elif isinstance(new, str):
            value = typed(new, node)
        else:
            value = new
        if secret and new == "":
            self.pending.pop(key, None)  # an empty password box keeps the current secret
        else:
            self.pending[key] = value
        if key in self.origins:
            self.origins[key].value = note(self.provenance(key), "#a60")
        self.validate()

    def set_entry(self, section: str, name: str, value: dict | None) -> None:
        """Pending add (dict) or delete (None) of a whole named entry."""
        prefix = f"{section}.{name}."
        for key in [k for k in self.pending if k.startswith(prefix)]:
            if value is None:
                del self.pending[key]
        self.pending[f"{section}.{name}"] = value

    def merged_session(self) -> dict:
        return {**self.session.values, **self.pending}

    def validate(self) -> list:
        """Validate the config with the pending values; show each problem at its field; return the
        problems the pending values bring."""
        for error in self.errors.values():
            error.value = ""
        problems = self._problems(self.merged_session())
        loose = []
        for problem in problems:
            key = _key_prefix(getattr(problem, "key", None) or "")
            text = getattr(problem, "message", None) or str(problem)
            hint = getattr(problem, "hint", None)
            line = f"{key}: {text}" + (f" ({hint})" if hint else "")
            if key in self.errors:
                self.errors[key].value = note(line, "#b00020")
            loose.append(line)
        self.problems.value = "".join(
            f"<div>{note('⚠ ' + p, '#b00020')}</div>" for p in loose)
        # every problem is shown; only those the pending edits bring block Apply and Save (a broken
        # entry elsewhere in the files stops only the commands that use it)
        before = {(getattr(p, "key", None), str(p)) for p in self._problems(self.session.values)}
        new = [p for p in problems if (getattr(p, "key", None), str(p)) not in before]
        self.save_button.disabled = self.apply_button.disabled = bool(new)
        return new

    def _problems(self, values: dict) -> list:
        from ..core.config import load_config
        from ..core.errors import ConfigError
        try:
            load_config(cwd=self.session.cwd or os.getcwd(), session=values)
        except ConfigError as err:
            return err.problems or [err]
        return []

    # -- actions ----------------------------------------------------------------------------------
    @safe
    def apply(self, _=None) -> str:
        """Set the pending values as session values (validated by the config service)."""
        from ..core import api
        if not self.pending:
            self.message.value = note("nothing to apply")
            return "nothing to apply"
        result = str(api.config_set(dict(self.pending)))
        self.pending.clear()
        self.refresh()
        self.message.value = note(result, "#070")
        return result

    @safe
    def save(self, _=None, path: str | None = None) -> str:
        """Apply, then write all session values into ./xt_config.yaml (comments kept)."""
        from ..core import api
        if self.pending:
            from ..core.errors import XTError
            if self.validate():
                raise XTError("fix the problems shown before saving")
            api.config_set(dict(self.pending))
            self.pending.clear()
        result = str(api.config_save(path or self.path))
        self.refresh()
        self.message.value = note(result, "#070")
        return result

    _on_apply = apply
    _on_save = save


class EntryEditor:
    """A named-entry section: entry dropdown, add / rename / delete, the entry's fields."""

    def __init__(self, form: ConfigForm, section: str, record: str):
        w = form.w
        self.form, self.section, self.record = form, section, record
        self.picker = self._picker([], None)
        self.name = w.Text(placeholder="new name", layout=w.Layout(width="180px"))
        self.add_button = w.Button(description="Add", icon="plus", layout=w.Layout(width="auto"))
        self.rename_button = w.Button(description="Rename", icon="i-cursor",
                                      layout=w.Layout(width="auto"))
        self.delete_button = w.Button(description="Delete", icon="trash", button_style="danger",
                                      layout=w.Layout(width="auto"))
        self.out, self.message = form.out, form.message
        self.add_button.on_click(self.add)
        self.rename_button.on_click(self.rename)
        self.delete_button.on_click(self.delete)
        self.fields = w.VBox()
        from ..core.config.validate import schema
        description = schema()["properties"][section].get("description", "")
        self.bar = w.HBox([self.picker, self.name, self.add_button, self.rename_button,
                           self.delete_button], layout=w.Layout(flex_flow="row wrap"))
        self.widget = w.VBox([w.HTML(note(description)), self.bar, self.fields])
        self.widget.add_class("xt-entries-" + section)

    def rebuild(self, select: str | None = None, validate: bool = True) -> None:
        names = self.form.names(self.section)
        current = select or self.picker.value
        # A new dropdown rather than new options on the old one: front ends then always show
        # the selected name (changing options and value together could leave it blank).
        self.picker = self._picker(names, current if current in names else (names[0] if names else None))
        self.bar.children = (self.picker,) + tuple(self.bar.children[1:])
        self.show(validate=validate)

    def _picker(self, names, value):
        w = self.form.w
        picker = w.Dropdown(options=names, value=value, description="entry",
                            layout=w.Layout(width="320px"))
        picker.observe(lambda c: self.show(), names="value")
        return picker

    @safe
    def show(self, validate: bool = True) -> None:
        from ..core.config.validate import schema
        name = self.picker.value
        if name is None:
            self.fields.children = [self.form.w.HTML(note(f"no {self.section} entries: add one"))]
            return
        props = schema()["$defs"][self.record]["properties"]
        entry = self.form.value(f"{self.section}.{name}") or {}
        required = schema()["$defs"][self.record].get("required") or []
        kind = self._kind(name, entry) if self.record == "target" else None
        # a target shows the keys every target has and those its backend reads (registry)
        keys = [k for k, sub in props.items() if (not sub.get("x-unused") or k in entry)
                and (kind is None or "x-kinds" not in sub or kind in sub["x-kinds"] or k in entry)]
        main = [k for k in keys if k in entry or k in required or (self.record, k) in REFERENCES]
        rows = [self.form.field(f"{self.section}.{name}.{k}", props[k], (self.record, k), kind)
                for k in main]
        rest = [self.form.field(f"{self.section}.{name}.{k}", props[k], (self.record, k), kind)
                for k in keys if k not in main]
        if rest:
            more = self.form.w.Accordion(children=[self.form.w.VBox(rest)], selected_index=None)
            more.set_title(0, f"more keys ({len(rest)})")
            rows.append(more)
        self.fields.children = rows
        if validate:
            self.form.validate()

    def _kind(self, name: str, entry: dict) -> str | None:
        """The backend kind of target ``name`` (None when it cannot be told yet)."""
        from ..core.compute import backend_class
        try:
            return backend_class(self.form.config(), name, entry).kind
        except Exception:  # noqa: BLE001 - an incomplete entry shows every key
            return None

    def _new_name(self) -> str:
        from ..core.errors import ConfigError
        new = self.name.value.strip()
        if not new or "." in new or " " in new:
            raise ConfigError(f"{self.section}: entry name {new!r}: use letters, digits, - or _")
        if new in self.form.names(self.section):
            raise ConfigError(f"{self.section}.{new} already exists")
        return new

    @safe
    def add(self, _=None) -> None:
        new = self._new_name()
        from ..core.config.validate import schema
        required = schema()["$defs"][self.record].get("required") or []
        # A new entry starts with its required keys (validation then says what else is needed).
        first = {"target": {"service": "pool"}, "service": {"type": "storage", "provider": "store-file"}}
        self.form.set_entry(self.section, new, dict(first.get(self.record, {k: "" for k in required})))
        self.name.value = ""
        self.rebuild(select=new)

    @safe
    def rename(self, _=None) -> None:
        old = self.picker.value
        if old is None:
            return
        new = self._new_name()
        entry = self.form.value(f"{self.section}.{old}") or {}
        # Pending edits under the old name move with it.
        moved = {k: v for k, v in self.form.pending.items() if k.startswith(f"{self.section}.{old}.")}
        from ..core.config.service import _plain_for_yaml
        self.form.set_entry(self.section, new, _plain_for_yaml(dict(entry)))
        self.form.set_entry(self.section, old, None)
        for key, value in moved.items():
            self.form.pending[f"{self.section}.{new}." + key.split(".", 2)[2]] = value
        self.name.value = ""
        self.rebuild(select=new)

    @safe
    def delete(self, _=None) -> None:
        old = self.picker.value
        if old is None:
            return
        self.form.set_entry(self.section, old, None)
        self.rebuild()


__all__ = ["ConfigForm"]
