"""
The admin pages: what every page shares (`Admin`, the layout, forms with
their CSRF token, widgets) and one module per page (``status``, ``network``,
``tcpip``, ``tunnel_tls``, ``serial``, ``meters``, ``http``, ``system``,
``ops``), each mounting its routes with `PageRoutes`.

Only the shared parts are imported here; `cmegw.web.app` imports the page
modules.
"""

from cmegw.web.pages.admin import Admin, PageRoutes, security_headers
from cmegw.web.pages.forms import CsrfGuard, changed_settings, same_origin
from cmegw.web.pages.layout import DATA_SUBDIR, web_root

# The other names of the former module cmegw/web/pages.py; they stay until the imports are updated.
from cmegw.web.auth import factory_password_in_use  # noqa: F401
from cmegw.web.pages.forms import (  # noqa: F401
    CSRF_FIELD, SESSION_COOKIE, Field, FormState, Upload, apply_form, applies_text, change_message,
    display_value, error_field, error_message, field_id, form_has, form_value, mark_restart, post_form,
    posted_number, render_field, save_form, save_numbered_form, settings_form, settings_state, typed_values,
    uploads)
from cmegw.web.pages.layout import SECTIONS, Layout, authenticated_user  # noqa: F401
from cmegw.web.pages.widgets import (  # noqa: F401
    Notice, button, card, cell, grid_table, hidden, kv_table, notice_tag, unavailable)

__all__ = ["Admin", "CsrfGuard", "DATA_SUBDIR", "PageRoutes", "changed_settings", "same_origin",
           "security_headers", "web_root"]
