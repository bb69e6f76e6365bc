"""
Moved: the tests of the admin pages are in tests/test_web_pages_<module>.py, the
JSON API's in tests/test_web_api.py and the host network's in
tests/test_host_read.py; their shared base is in tests/web_helpers.py.  This
name stays until the imports are updated.
"""

from tests.web_helpers import (  # noqa: F401
    BASE, HOST, FakeCertificate, FakeLog, FakeRunner, FakeWeb, PagesTestBase, csrf_token, make_wheel, multipart)
