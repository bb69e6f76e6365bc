"""Moved to cmegw.web.pages.status; this name stays until the imports are updated."""

from cmegw.web.pages.status import (  # noqa: F401
    INDICATIONS, build_date, tunnel_state_text, indication_lights, status_content, routes)
