"""LoginPanel: Azure login for this kernel session (``%xt_login --form``).

Method dropdown, tenant, login / logout buttons and a status line (who, tenant, vault and the names
— never the values — of the secrets read). Login runs on a background thread so the kernel stays
free while a device-code login waits for the user; the device code is shown as text with a link.
"""
from __future__ import annotations

import html
import threading

from ._common import WidgetView, note, safe, show_error


class LoginPanel(WidgetView):
    """The login widget; ``login()`` / ``logout()`` are what the buttons do."""

    def __init__(self, session=None):
        import ipywidgets as w
        from ..core.auth.service import METHODS
        from ..core.session import get_session
        self.session = session or get_session()
        cfg = self.session.config()
        self.method = w.Dropdown(options=list(METHODS), value=cfg.get("general.authentication") or "auto",
                                 description="method")
        self.tenant = w.Text(value=cfg.get("general.azure-tenant-id") or "", description="tenant",
                             placeholder="general.azure-tenant-id", layout=w.Layout(width="440px"))
        self.login_button = w.Button(description="Log in", icon="sign-in", button_style="primary")
        self.logout_button = w.Button(description="Log out", icon="sign-out")
        self.device = w.HTML()
        self.status = w.HTML()
        self.message = w.HTML()
        self.out = w.Output(layout=w.Layout(max_height="120px", overflow="auto"))
        self.login_button.on_click(self.login)
        self.logout_button.on_click(self.logout)
        self.widget = w.VBox([w.HBox([self.method, self.tenant]),
                              w.HBox([self.login_button, self.logout_button]),
                              self.device, self.status, self.message, self.out])
        self.widget.add_class("xt-login-panel")
        self.thread: threading.Thread | None = None
        self.show_status()

    def show_device_code(self, uri: str, code: str, expires_on=None) -> None:
        """The device-code callback: show the code as text and the URL as a link."""
        self.device.value = (
            f"To sign in, open <a href='{html.escape(uri)}' target='_blank'>{html.escape(uri)}</a> "
            f"and enter the code <code class='xt-device-code'>{html.escape(code)}</code>")

    def show_status(self) -> None:
        from ..core.auth.service import whoami
        status = whoami(self.session)
        if not status.logged_in:
            self.status.value = note("not logged in")
        else:
            secrets = ", ".join(status.secrets) if status.secrets else "none"
            vault = (f"<br>vault {html.escape(status.vault)}: secrets {html.escape(secrets)}"
                     if status.vault else "")
            error = f"<br>{note('vault not read: ' + status.vault_error, '#b00020')}" if status.vault_error else ""
            self.status.value = (f"logged in as <b>{html.escape(str(status.who))}</b> (tenant "
                                 f"{html.escape(str(status.tenant or 'default'))}, method "
                                 f"{html.escape(str(status.method))}){vault}{error}")
        self.login_button.disabled = status.logged_in or self.busy
        self.logout_button.disabled = not status.logged_in

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @safe
    def login(self, _=None, wait: bool = False) -> None:
        """Start the login on a background thread (``wait=True``: block until it ends)."""
        if self.busy:
            return
        self.message.value = note(f"logging in ({self.method.value})...")
        self.device.value = ""
        thread = self.thread = threading.Thread(target=self._login, daemon=True, name="xt-login")
        self.login_button.disabled = True
        thread.start()
        if wait:
            thread.join()

    def _login(self) -> None:
        from ..core.auth.service import login
        try:
            login(self.session, method=self.method.value, tenant=self.tenant.value.strip() or None,
                  device_code_callback=self.show_device_code)
            self.message.value = ""
            self.device.value = ""
        except Exception as err:  # noqa: BLE001 - shown in the panel, never raised into the comm
            show_error(self, err)
        finally:
            self.thread = None
            try:
                self.show_status()
            except Exception as err:  # noqa: BLE001
                show_error(self, err)

    @safe
    def logout(self, _=None) -> None:
        from ..core.auth.service import logout
        self.message.value = note(logout(self.session))
        self.device.value = ""
        self.show_status()


__all__ = ["LoginPanel"]
