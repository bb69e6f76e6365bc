"""Moved to cmegw.web.pages.meters; this name stays until the imports are updated."""

from cmegw.web.pages.meters import (  # noqa: F401
    REFRESH_SECONDS, METER_COLUMNS, RECORD_COLUMNS, MeterPages, line_view, meters_csv, reading_csv, download,
    scan_card, meters_table, reading_content, meters_content, routes)
