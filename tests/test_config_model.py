"""Tests for cmegw.config.model."""

from twisted.trial.unittest import TestCase

from cmegw.config.model import (
    AuthDirective,
    Config,
    ConfigError,
    LineConfig,
    User,
    directive_for,
    ha1,
    parse_address_and_mask,
)
from cmegw.config.store import factory_defaults


class FactoryDefaultsTests(TestCase):
    def test_table3(self):
        """The shipped defaults are the device's table 3."""
        c = factory_defaults()
        self.assertEqual(list(c.lines), [1])
        self.assertEqual(c.lines[1].baud_rate, 2400)
        self.assertEqual(c.lines[1].settings_text, "RS232, 2400, Even, 8, 1, None")
        t = c.tunnels[1]
        self.assertEqual((t.enabled, t.listen, t.keepalive, t.disconnect_timeout), (True, "tcp:10001", 45, 10))
        self.assertEqual((c.network.dhcp, c.network.bootp), (True, False))
        self.assertEqual((c.network.link_speed, c.network.link_duplex), ("auto", "auto"))
        h = c.http
        self.assertEqual((h.enabled, h.http_port, h.https_port, h.max_timeout, h.max_bytes, h.logging,
                          h.max_log_entries), (True, 80, 443, 10, 40960, True, 2000))
        self.assertEqual(h.log_format, '%h %t "%r" %s %B "%{Referer}i" "%{User-Agent}i"')
        [d] = c.auth
        self.assertEqual((d.uri, d.realm, d.auth_type), ("/", "config", "Digest"))
        [u] = d.users
        self.assertEqual(u.name, "admin")
        self.assertTrue(u.check_password("config", "admin"))
        self.assertFalse(u.check_password("config", "Admin"))

    def test_round_trip(self):
        c = factory_defaults()
        self.assertEqual(Config.from_dict(c.to_dict()), c)

    def test_no_clear_password(self):
        """Users are stored as digests only: no password field, and the factory password appears nowhere."""
        from cmegw.config.store import factory_defaults_text

        [user] = factory_defaults().to_dict()["auth"][0]["user"]
        self.assertEqual(sorted(user), ["ha1_md5", "ha1_sha256", "name"])
        text = factory_defaults_text()
        self.assertNotIn("password =", text[text.index("[[auth]]"):])
        self.assertEqual(text.count('"admin"'), 1, "the user name only, not the password")


class ValidationTests(TestCase):
    def assertRefused(self, data, setting, fragment):
        with self.assertRaises(ConfigError) as cm:
            Config.from_dict(data)
        self.assertEqual(cm.exception.setting, setting)
        self.assertIn(fragment, str(cm.exception))

    def test_bad_baud(self):
        self.assertRefused({"line": {"1": {"baud_rate": 1234}}}, "line.1.baud_rate", "300, 600, 1200, 2400")

    def test_unknown_key(self):
        self.assertRefused({"line": {"1": {"baudrate": 2400}}}, "line.1.baudrate", "unknown setting")

    def test_unknown_section(self):
        self.assertRefused({"lines": {}}, "lines", "unknown section")

    def test_tunnel_without_line(self):
        self.assertRefused({"line": {"1": {}}, "tunnel": {"2": {}}}, "tunnel.2", "add [line.2]")

    def test_line_numbers(self):
        self.assertRefused({"line": {"0": {}}}, "line.0", "from 1 to 32")

    def test_bad_endpoint(self):
        self.assertRefused({"line": {"1": {}}, "tunnel": {"1": {"listen": "nope:1"}}}, "tunnel.1.listen",
                           "endpoint")

    def test_keepalive_range(self):
        self.assertRefused({"line": {"1": {}}, "tunnel": {"1": {"keepalive": -1}}}, "tunnel.1.keepalive",
                           "0 to 7200")

    def test_bool_type(self):
        self.assertRefused({"http": {"logging": "yes"}}, "http.logging", "true or false")

    def test_old_tls_refused(self):
        self.assertRefused({"http": {"tls_versions": ["TLSv1.1"]}}, "http.tls_versions", "refused")

    def test_same_device_twice(self):
        self.assertRefused({"line": {"1": {"device": "/dev/ttyUSB0"}, "2": {"device": "/dev/ttyUSB0"}}},
                           "line.device", "one line only")

    def test_hostname_rule(self):
        for bad in ("1box", "box-", "-box", "bo x"):
            self.assertRefused({"network": {"hostname": bad}}, "network.hostname", "start with a letter")
        Config.from_dict({"network": {"hostname": "gw-01"}})

    def test_auth_uri(self):
        with self.assertRaises(ConfigError) as cm:
            AuthDirective(uri="status")
        self.assertIn("begins with /", str(cm.exception))

    def test_duplicate_directive(self):
        d = AuthDirective(uri="/x")
        with self.assertRaises(ConfigError):
            Config(auth=(d, d))

    def test_several_lines(self):
        c = Config.from_dict({"line": {"1": {"device": "/dev/ttyUSB0"}, "2": {"device": "/dev/ttyUSB1"}},
                              "tunnel": {"1": {}, "2": {"listen": "tcp:10002"}}})
        self.assertEqual(sorted(c.tunnels), [1, 2])
        self.assertEqual(c.tunnels[2].listen, "tcp:10002")


class AddressTests(TestCase):
    def test_forms(self):
        self.assertEqual(parse_address_and_mask("x", "10.1.2.3"), ("10.1.2.3", "255.0.0.0"))
        self.assertEqual(parse_address_and_mask("x", "172.16.0.1"), ("172.16.0.1", "255.255.0.0"))
        self.assertEqual(parse_address_and_mask("x", "192.168.1.1"), ("192.168.1.1", "255.255.255.0"))
        self.assertEqual(parse_address_and_mask("x", "192.168.1.1/16"), ("192.168.1.1", "255.255.0.0"))
        self.assertEqual(parse_address_and_mask("x", "192.168.1.1 255.255.255.128"),
                         ("192.168.1.1", "255.255.255.128"))

    def test_bad(self):
        for bad in ("192.168.1.300", "192.168.1.1/40", "1.2.3", "230.1.1.1", "192.168.1.1 255.0.255.0"):
            self.assertRaises(ConfigError, parse_address_and_mask, "network.ip_address", bad)


class AuthTests(TestCase):
    def test_longest_prefix(self):
        root = AuthDirective(uri="/")
        mbus = AuthDirective(uri="/mbus", auth_type="Basic")
        metrics = AuthDirective(uri="/metrics", auth_type="None")
        ds = (root, mbus, metrics)
        self.assertIs(directive_for(ds, "/"), root)
        self.assertIs(directive_for(ds, "/status"), root)
        self.assertIs(directive_for(ds, "/mbus/serial"), mbus)
        self.assertIs(directive_for(ds, "/mbusx"), root)
        self.assertIs(directive_for(ds, "/metrics"), metrics)
        self.assertIsNone(directive_for((mbus,), "/status"))

    def test_user_hashes(self):
        u = User.with_password("bob", "config", "s3cret")
        self.assertEqual(u.ha1_md5, ha1("bob", "config", "s3cret"))
        self.assertEqual(len(u.ha1_sha256), 64)
        self.assertNotIn("s3cret", repr(u))

    def test_bad_user_name(self):
        self.assertRaises(ConfigError, User.with_password, "a:b", "config", "x")

    def test_line_config_default(self):
        self.assertEqual(LineConfig().baud_rate, 2400)
