"""Moved to cmegw.web.pages.http; this name stays until the imports are updated."""

from cmegw.web.pages.http import (  # noqa: F401
    TABS, STATISTICS, CONFIG_FIELDS, DIRECTIVE_FIELDS, USER_FIELDS, directives_view, save, statistics_content,
    log_content, configuration_content, authentication_content, certificate_content, routes)
