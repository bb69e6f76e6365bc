"""Moved to cmegw.web.pages.tcpip; this name stays until the imports are updated."""

from cmegw.web.pages.tcpip import (  # noqa: F401
    TABS, COUNTERS, accept_fields, connect_fields, disconnect_fields, statistics_content, forms_content, routes)
