"""Moved to cmegw.web.pages.ops; this name stays until the imports are updated."""

from cmegw.web.pages.ops import LIVE_ROWS, PAGE_ROWS, PACKAGED, STYLE, packaged, routes, trace_rows  # noqa: F401
