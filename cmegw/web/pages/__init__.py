"""
The admin pages: what every page shares (`Admin`, the layout, forms with
their CSRF token, widgets) and one module per page (``status``, ``network``,
``tcpip``, ``tunnel_tls``, ``serial``, ``meters``, ``http``, ``system``,
``ops``), each mounting its routes with `PageRoutes`; ``system_update`` is the
System page's software update, loaded when an update is first asked for.

Only the shared parts are imported here; `cmegw.web.app` imports the page
modules.
"""

from cmegw.web.http import security_headers
from cmegw.web.pages.admin import Admin, PageRoutes
from cmegw.web.pages.forms import CsrfGuard, changed_settings, same_origin
from cmegw.web.pages.layout import DATA_SUBDIR, web_root

__all__ = ["Admin", "CsrfGuard", "DATA_SUBDIR", "PageRoutes", "changed_settings", "same_origin",
           "security_headers", "web_root"]
