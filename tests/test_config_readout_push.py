"""Tests for cmegw.config.readout: a push target's settings and its URL."""

from twisted.trial.unittest import TestCase

from cmegw.config.checks import ConfigError
from cmegw.config.readout import PushConfig, parse_push_url



class PushUrlTests(TestCase):
    def test_http_and_https(self):
        url = parse_push_url("https://Receiver.Example:8443/in/readings?site=7")
        self.assertEqual((url.scheme, url.host, url.port, url.target),
                         ("https", "receiver.example", 8443, "/in/readings?site=7"))
        self.assertEqual(url.origin, "https://receiver.example:8443")
        self.assertEqual(str(url), "https://receiver.example:8443/in/readings?site=7")

    def test_default_ports_and_path(self):
        self.assertEqual(parse_push_url("http://10.0.0.5").port, 80)
        self.assertEqual(parse_push_url("http://10.0.0.5").target, "/")
        url = parse_push_url("https://x.example/in")
        self.assertEqual((url.port, str(url), url.netloc), (443, "https://x.example/in", "x.example:443"))

    def test_ipv6_literal(self):
        url = parse_push_url("http://[::1]:8080/in")
        self.assertEqual((url.host, url.port, url.netloc), ("::1", 8080, "[::1]:8080"))

    def test_refusals_say_what_is_wrong(self):
        cases = {
            "ftp://x.example/": "http:// or https:// (ftp:// given)",
            "x.example/in": "http:// or https:// (no scheme given)",
            "http:///in": "names no host",
            "http://x.example:99999/": "number from 1 to 65535 (x.example:99999 given)",
            "http://x.example:0/": "number from 1 to 65535 (0 given)",
            "http://x.example:/": "no port after it",
            "http://user:secret@x.example/": "no user name or password in the URL",
            "http://x.example/in#top": "fragment",
            "http://x.example/a b": "spaces",
            "http://x.example/zähler": "non-ASCII",
            "": "empty",
        }
        for text, words in cases.items():
            with self.assertRaises(ValueError, msg=text) as caught:
                parse_push_url(text)
            self.assertIn(words, str(caught.exception), text)


class PushConfigTests(TestCase):
    def test_defaults(self):
        s = PushConfig(url="https://x.example/in")
        self.assertEqual((s.format, s.auth, s.ca, s.timeout, s.enabled), ("json", "none", "", 10.0, True))

    def test_url_checked_with_setting_name(self):
        with self.assertRaises(ConfigError) as caught:
            PushConfig(url="ftp://x.example/")
        self.assertEqual(caught.exception.setting, "push.url")
        self.assertIn("http:// or https://", str(caught.exception))

    def test_choices_and_credentials(self):
        for changes, setting_name in [({"format": "xml"}, "push.format"), ({"auth": "digest"}, "push.auth"),
                                      ({"auth": "basic"}, "push.username"), ({"auth": "bearer"}, "push.token"),
                                      ({"auth": "basic", "username": "a:b"}, "push.username"),
                                      ({"token": "abc\r\nX-Evil: 1"}, "push.token"),
                                      ({"timeout": 0}, "push.timeout"), ({"timeout": True}, "push.timeout"),
                                      ({"ca": "relative/ca.pem"}, "push.ca")]:
            with self.assertRaises(ConfigError, msg=changes) as caught:
                PushConfig(url="https://x.example/", **changes)
            self.assertEqual(caught.exception.setting, setting_name)

    def test_secrets_are_not_shown(self):
        s = PushConfig(url="https://x.example/", auth="basic", username="meter", password="s3cret!",
                         token="tok-123")
        self.assertNotIn("s3cret", repr(s))
        self.assertNotIn("tok-123", repr(s))
        with self.assertRaises(ConfigError) as caught:
            PushConfig(url="https://x.example/", password="bad\npassword")
        self.assertNotIn("password", repr(caught.exception.value))
