"""Moved to cmegw.web.pages.system; this name stays until the imports are updated."""

from cmegw.web.pages.system import (  # noqa: F401
    RESTART_DELAY, MAX_WHEEL_BYTES, INSTALL_TIMEOUT, POLL_LIMIT, UpdateError, WheelInfo, verify_wheel,
    run_process, pidfile_of, reexec, UpdateState, SoftwareUpdater, boot_id, waiting_page, system_content,
    routes, schedule_restart, schedule_factory_reset)
