"""Moved to cmegw.web.pages.tunnel_tls; this name stays until the imports are updated."""

from cmegw.web.pages.tunnel_tls import (  # noqa: F401
    PAGE_PATH, API_PATH, FILE_PREFIX, UPLOADABLE, CLIENT_PAIR, UploadError, check_bundle, check_upload,
    uploaded_paths, install, remove_unused, summary, files_view, content, routes)
