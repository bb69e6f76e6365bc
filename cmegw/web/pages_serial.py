"""Moved to cmegw.web.pages.serial; this name stays until the imports are updated."""

from cmegw.web.pages.serial import (  # noqa: F401
    TABS, STATISTICS, line_fields, statistics_content, configuration_content, routes)
