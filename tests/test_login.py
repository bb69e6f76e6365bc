"""
Tests for cmegw.login: the login limiter the web and the console share.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from cmegw.login import (BLOCK_AFTER, BLOCK_SECONDS, FORGET_AFTER, FREE_FAILURES, LoginLimiter, escaped,
                         source_key)


def capture_logs(testcase: TestCase, namespace: str = "") -> list[dict]:
    """The log events of `namespace` (a prefix) while the test runs."""
    events: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_namespace", "").startswith(namespace):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class LimiterTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.limiter = LoginLimiter(self.clock)

    def fail(self, host: str = "192.0.2.1", times: int = 1) -> float:
        wait = 0.0
        for _ in range(times):
            wait = self.limiter.failed(host, "web", "admin", "cmegw")
        return wait

    def test_free_failures_do_not_wait(self):
        self.assertEqual(self.fail(times=FREE_FAILURES), 0)
        self.assertEqual(self.limiter.wait("192.0.2.1"), 0)

    def test_wait_grows_then_blocks(self):
        self.fail(times=FREE_FAILURES)
        waits = [self.fail() for _ in range(BLOCK_AFTER - FREE_FAILURES)]
        self.assertEqual(waits[:-1], sorted(waits[:-1]))
        self.assertEqual(waits[0], 1.0)
        self.assertGreater(waits[1], waits[0])
        self.assertEqual(waits[-1], BLOCK_SECONDS)
        self.assertTrue(self.limiter.blocked("192.0.2.1"))
        self.clock.advance(100)
        self.assertEqual(self.limiter.wait("192.0.2.1"), BLOCK_SECONDS - 100)

    def test_block_expires(self):
        self.fail(times=BLOCK_AFTER)
        self.clock.advance(BLOCK_SECONDS)
        self.assertEqual(self.limiter.wait("192.0.2.1"), 0)
        self.assertEqual(self.fail(), BLOCK_SECONDS, "remembered: one more failure blocks again")
        self.clock.advance(FORGET_AFTER)
        self.assertEqual(self.limiter.wait("192.0.2.1"), 0)
        self.assertEqual(len(self.limiter), 0)
        self.assertEqual(self.fail(), 0, "forgotten: a fresh count")

    def test_per_source(self):
        self.fail(times=BLOCK_AFTER)
        self.assertGreater(self.limiter.wait("192.0.2.1"), 0)
        self.assertEqual(self.limiter.wait("192.0.2.2"), 0)
        self.assertEqual(self.limiter.wait("2001:db8::1"), 0)

    def test_good_login_resets(self):
        self.fail(times=FREE_FAILURES + 2)
        self.assertGreater(self.limiter.wait("192.0.2.1"), 0)
        self.limiter.succeeded("192.0.2.1")
        self.assertEqual(self.limiter.wait("192.0.2.1"), 0)
        self.assertEqual(self.fail(times=FREE_FAILURES), 0)

    def test_bounded_memory(self):
        limiter = LoginLimiter(self.clock, max_sources=10)
        for n in range(25):
            limiter.failed(f"198.51.100.{n}", "console", "x")
            self.clock.advance(1)
        self.assertEqual(len(limiter), 10)
        for _ in range(BLOCK_AFTER):
            limiter.failed("198.51.100.24", "console", "x")
        self.assertGreater(limiter.wait("198.51.100.24"), 0, "the newest are kept")
        limiter.failed("203.0.113.9", "console", "x")
        self.assertGreater(limiter.wait("198.51.100.24"), 0, "it failed last: not the one forgotten")

    def test_ipv6_per_64(self):
        self.assertEqual(source_key("2001:db8:1:2::5"), source_key("2001:db8:1:2:ffff::1"))
        self.assertNotEqual(source_key("2001:db8:1:2::5"), source_key("2001:db8:1:3::5"))
        self.assertEqual(source_key("::ffff:192.0.2.7"), "192.0.2.7")
        self.assertEqual(source_key(None), "?")

    def test_counted_and_logged(self):
        events = capture_logs(self, "cmegw.login")
        self.limiter.failed("192.0.2.1", "web", "ad\r\nmin", "cmegw")
        self.limiter.failed("192.0.2.1", "console", b"root", "console")
        self.assertEqual(self.limiter.stats.failures, {"web": 1, "console": 1})
        self.assertEqual(len(events), 2)
        text = events[0]["log_format"].format(**events[0])
        self.assertIn("192.0.2.1", text)
        self.assertIn("cmegw", text)
        self.assertIn(r"'ad\r\nmin'", text)
        self.assertNotIn("\n", text)

    def test_escaped(self):
        self.assertEqual(escaped("a\x1b[2Jb"), repr("a\x1b[2Jb"))
        self.assertLess(len(escaped("x" * 1000)), 80)
