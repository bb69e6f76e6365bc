"""Moved to cmegw.web.pages.network; this name stays until the imports are updated."""

from cmegw.web.pages.network import (  # noqa: F401
    TABS, INTERFACE_FIELDS, LINK_FIELDS, ALIASES, on_off, interface_state, prepare_interface, host_result,
    host_note, renew_code, status_content, interface_content, link_content, routes)
