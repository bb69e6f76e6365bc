"""
Tests for `cmegw.web.accesslog`: the access log's format, escaping and ring
buffer, and the site logging each request (refused ones too).
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from cmegw.web.accesslog import (LIVE_HEADER, LOG_VALUE_LIMIT, AccessLog, AccessRecord, LogQuery, escape_value,
                                 format_entry)
from cmegw.web.auth import set_authenticated_user
from tests.web_helpers import GET, Placeholder, connect, make_site


class AccessLogTests(SynchronousTestCase):
    def record(self, **changes: object) -> AccessRecord:
        headers = Headers({b"User-Agent": [b"curl/8"], b"Referer": [b"http://gw/"],
                           b"Authorization": [b"Basic YWRtaW46YWRtaW4="], b"Cookie": [b"s=1"]})
        values: dict[str, object] = dict(remote="127.0.0.1", local_port=8080, method=b"GET", path=b"/status",
                                         query=b"?x=1", version=b"HTTP/1.1", status=200, body_bytes=0,
                                         user="admin", headers=headers, time=3600.0)
        values.update(changes)
        return AccessRecord(**values)  # type: ignore[arg-type]

    def test_directives(self) -> None:
        clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(3600.0))
        record = self.record()
        expected = {"%a": "127.0.0.1", "%h": "127.0.0.1", "%b": "0", "%B": "-", "%m": "GET", "%p": "8080",
                    "%q": "?x=1", "%t": clock, "%u": "admin", "%U": "/status", "%r": "GET /status?x=1 HTTP/1.1",
                    "%s": "200", "%{User-Agent}i": "curl/8", "%{X-None}i": "-", "%%": "%", "%z": "%z"}
        for directive, value in expected.items():
            self.assertEqual(format_entry(directive, record), value, directive)
        self.assertEqual(format_entry("%b %B", self.record(body_bytes=12)), "12 12")
        self.assertEqual(format_entry("%q", self.record(query=b"")), "")
        self.assertEqual(format_entry("%u", self.record(user=None)), "-")

    def test_default_format(self) -> None:
        line = format_entry('%h %t "%r" %s %B "%{Referer}i" "%{User-Agent}i"', self.record(body_bytes=5))
        clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(3600.0))
        self.assertRegex(clock, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", "date and time")
        self.assertEqual(line, f'127.0.0.1 {clock} "GET /status?x=1 HTTP/1.1" 200 5 "http://gw/" "curl/8"')

    def test_secrets_never_logged(self) -> None:
        self.assertEqual(format_entry("%{Authorization}i %{cookie}i %{Proxy-Authorization}i", self.record()),
                         "- - -")

    def test_long_values_whole_up_to_the_limit(self) -> None:
        long = b"/" + b"p" * 2000
        record = self.record(path=long, query=b"?" + b"q" * 200, method=b"M" * 100,
                             headers=Headers({b"User-Agent": [b"u" * 300]}))
        self.assertEqual(format_entry("%U", self.record(path=b"/" + b"p" * 500)), "/" + "p" * 500, "a long path whole")
        self.assertEqual(format_entry("%U", record), "/" + "p" * (LOG_VALUE_LIMIT - 1))
        self.assertEqual(format_entry("%{User-Agent}i", record), "u" * 300)
        self.assertEqual(format_entry("%r", record), "M" * 100 + " /" + "p" * (LOG_VALUE_LIMIT - 1) + "?" + "q" * 200
                         + " HTTP/1.1")

    def test_escaped(self) -> None:
        """No log injection: quotes, backslashes, line breaks and other bytes are escaped."""
        record = self.record(headers=Headers({b"User-Agent": [b'a"b\\c\x1b[31m\xc3\xa9']}), path=b"/a\r\nb")
        self.assertEqual(format_entry("%{User-Agent}i", record), 'a\\"b\\\\c\\x1b[31m\\xc3\\xa9')
        self.assertEqual(format_entry("%U", record), "/a\\x0d\\x0ab")
        self.assertEqual(escape_value(b"\n" * 400), "\\x0a" * (LOG_VALUE_LIMIT // 4))
        self.assertNotIn("\n", format_entry("%U %r", record))

    def test_ring_buffer(self) -> None:
        log = AccessLog(3)
        for n in range(5):
            log.add(f"line {n}")
        self.assertEqual(log.entries, ["line 2", "line 3", "line 4"])
        self.assertEqual(log.bytes, 3 * len("line 2\n"))
        log.resize(2)
        self.assertEqual(log.entries, ["line 3", "line 4"])
        log.clear()
        self.assertEqual((log.entries, log.bytes), ([], 0))

    def test_bounded_by_bytes_too(self) -> None:
        log = AccessLog(1000, max_bytes=100)
        for n in range(50):
            log.add(f"line {n:04d}")
        self.assertLessEqual(log.bytes, 100)
        self.assertEqual(log.entries[-1], "line 0049")
        self.assertEqual(log.bytes, sum(len(e) + 1 for e in log.entries))

    def filled(self) -> AccessLog:
        log = AccessLog(100)
        for n, (path, status, live) in enumerate([
                (b"/status", 200, False), (b"/static/cmegw.css", 200, False), (b"/status", 401, False),
                (b"/serial", 200, True), (b"/http", 404, False)]):
            record = self.record(path=path, status=status, time=float(n),
                                 headers=Headers({LIVE_HEADER: [b"1"]} if live else {}))
            log.add(f"{n} {path.decode()} {status}", record)
        return log

    def test_filter_hides_static_401_and_live_lines(self) -> None:
        log = self.filled()
        shown = log.select(LogQuery())
        self.assertEqual([e.text for e in shown.entries], ["4 /http 404", "0 /status 200"], "newest first")
        self.assertEqual((shown.matched, shown.hidden, shown.pages), (2, 3, 1))
        every = log.select(LogQuery(static=True, unauthorized=True, live=True))
        self.assertEqual(len(every.entries), 5)
        self.assertEqual([e.text for e in log.select(LogQuery(static=True, search="CSS")).entries],
                         ["1 /static/cmegw.css 200"], "the search ignores case")

    def test_paging(self) -> None:
        log = AccessLog(100)
        for n in range(25):
            log.add(f"line {n}")
        second = log.select(LogQuery(page=2, size=10))
        self.assertEqual((second.page, second.pages), (2, 3))
        self.assertEqual(second.entries[0].text, "line 14")
        self.assertEqual(log.select(LogQuery(page=99, size=10)).page, 3, "beyond the end: the last page")
        self.assertEqual(log.select(LogQuery(page=99, size=10)).entries[-1].text, "line 0")

    def test_site_logs_each_request(self) -> None:
        class WhoAmI(Placeholder):
            def render_GET(self, request: object) -> bytes:
                set_authenticated_user(request, "admin")
                return b"x"

        site, settings, _ = make_site(WhoAmI(), log_format="%u %m %U%q %s %b")
        channel, transport = connect(site)
        channel.dataReceived(GET)
        self.assertEqual(site.access_log.entries, ["admin GET /status?x=1 200 1"])
        entry = site.access_log.records[0]
        self.assertEqual((entry.status, entry.path, entry.live, entry.static), (200, "/status", False, False))

    def test_max_entries_and_logging_live(self) -> None:
        site, settings, _ = make_site(max_log_entries=2, log_format="%U")
        channel, transport = connect(site)
        for n in range(4):
            channel.dataReceived(b"GET /%d HTTP/1.1\r\n\r\n" % n)
        self.assertEqual(site.access_log.entries, ["/2", "/3"])
        settings.change(logging=False)
        channel.dataReceived(b"GET /4 HTTP/1.1\r\n\r\n")
        self.assertEqual(site.access_log.entries, ["/2", "/3"])
        settings.change(logging=True, max_log_entries=3)
        channel.dataReceived(b"GET /5 HTTP/1.1\r\n\r\n")
        self.assertEqual(site.access_log.entries, ["/2", "/3", "/5"])

    def test_refused_requests_logged(self) -> None:
        site, _, clock = make_site(log_format="%a %r %s %{Host}i", max_bytes=1024)
        channel, _ = connect(site)
        channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: gw\r\nAccept: */*\r\n")
        clock.advance(10)
        channel, _ = connect(site)
        channel.dataReceived(b"GET /big HTTP/1.1\r\nX: " + b"a" * 2000)
        channel, _ = connect(site)
        channel.dataReceived(b"NOISE\r\n")
        self.assertEqual(site.access_log.entries, ["127.0.0.1 GET /slow HTTP/1.1 408 gw",
                                                   "127.0.0.1 GET /big HTTP/1.1 413 -",
                                                   "127.0.0.1 - - - 400 -"])
