"""Moved to cmegw.console.mbus_commands; this name stays until the imports are updated."""

from cmegw.console.mbus_commands import (  # noqa: F401
    KINDS,
    MBUS,
    PROGRESS_STEP,
    mbus_read,
    mbus_scan,
    mbus_status,
    mbus_stop,
    meter_lines,
    reading_report,
    scan_report,
)
