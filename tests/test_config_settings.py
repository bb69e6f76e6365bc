"""Tests for cmegw.config.settings: one validation for console, web and API."""

from twisted.trial.unittest import TestCase

from cmegw.config.model import ConfigError
from cmegw.config.settings import (
    labelled,
    UnknownSetting,
    apply_setting,
    apply_settings,
    describe,
    format_value,
    get_setting,
    needs_restart,
    setting_names,
)
from cmegw.config.store import factory_defaults


class SettingsTests(TestCase):
    def setUp(self):
        self.config = factory_defaults()

    def test_text_values(self):
        c = apply_setting(self.config, "line.1.baud_rate", "300")
        self.assertEqual(c.lines[1].baud_rate, 300)
        c = apply_setting(c, "tunnel.1.keepalive", " 0 ")
        self.assertEqual(c.tunnels[1].keepalive, 0)
        c = apply_setting(c, "http.logging", "off")
        self.assertFalse(c.http.logging)
        c = apply_setting(c, "http.tls_versions", "TLSv1.3")
        self.assertEqual(c.http.tls_versions, ("TLSv1.3",))
        self.assertEqual(self.config.lines[1].baud_rate, 2400, "the old value is untouched")

    def test_messages_label_the_setting_in_words(self):
        """The message names the setting as the pages label it; the dotted name stays on the error."""
        from cmegw.config.model import HIDDEN, MISSING
        from cmegw.config.settings import label_of

        self.assertEqual(label_of("line.1.baud_rate"), "Baud rate of line 1")
        self.assertEqual(label_of("push.2.url"), "URL of HTTP target 2")
        self.assertEqual(label_of("http.http_port"), "HTTP port")
        self.assertEqual(label_of("tunnel.2"), "Tunnel 2")
        self.assertEqual(label_of("auth.user.password"), "Password")
        self.assertEqual(label_of("no.such"), "no.such", "a name without a label is shown as it is")
        secret = ConfigError("auth.user.password", HIDDEN, "use a password of 1 to 128 characters")
        self.assertEqual(str(secret), "auth.user.password: use a password of 1 to 128 characters",
                         "the model's checks know the dotted name only")
        secret = labelled(secret)
        self.assertEqual(str(secret), "Password: use a password of 1 to 128 characters")
        self.assertIsNone(secret.shown_value)
        self.assertEqual(str(labelled(ConfigError("line.1.device", MISSING, "this setting is required here"))),
                         "Serial device of line 1: this setting is required here")
        summary = labelled(ConfigError("tunnel.1.connect_hosts", "(13 hosts)", "use at most 12 hosts"))
        self.assertEqual(str(summary), "Remote hosts of tunnel 1: 13 hosts; use at most 12 hosts")
        with self.assertRaises(ConfigError) as cm:
            apply_setting(self.config, "tunnel.1.keepalive", "-1")
        self.assertEqual((cm.exception.setting, cm.exception.label), ("tunnel.1.keepalive", "TCP keep-alive of tunnel 1"))
        self.assertTrue(str(cm.exception).startswith("TCP keep-alive of tunnel 1: -1 is not allowed; "))

    def test_messages_name_setting_value_and_allowed(self):
        with self.assertRaises(ConfigError) as cm:
            apply_setting(self.config, "line.1.baud_rate", "2401")
        self.assertEqual(str(cm.exception),
                         "Baud rate of line 1: 2401 is not allowed; use one of 300, 600, 1200, 2400, 4800, 9600, "
                         "19200, 38400")
        with self.assertRaises(ConfigError) as cm:
            apply_setting(self.config, "tunnel.1.disconnect_timeout", "ten")
        self.assertIn("whole number", str(cm.exception))
        with self.assertRaises(ConfigError) as cm:
            apply_setting(self.config, "http.logging", "maybe")
        self.assertIn("on or off", str(cm.exception))

    def test_unknown(self):
        self.assertRaises(UnknownSetting, apply_setting, self.config, "line.2.baud_rate", "300")
        self.assertRaises(UnknownSetting, apply_setting, self.config, "line.1.speed", "300")
        self.assertRaises(UnknownSetting, apply_setting, self.config, "bogus", "1")

    def test_all_or_nothing(self):
        with self.assertRaises(ConfigError):
            apply_settings(self.config, {"line.1.baud_rate": "300", "tunnel.1.keepalive": "-5"})

    def test_ip_address_sets_mask(self):
        c = apply_setting(self.config, "network.ip_address", "192.168.7.2/25")
        self.assertEqual((c.network.ip_address, c.network.netmask), ("192.168.7.2", "255.255.255.128"))

    def test_restart_rules(self):
        self.assertTrue(needs_restart("network.dhcp"))
        self.assertTrue(needs_restart("network.ip_address"))
        self.assertFalse(needs_restart("line.1.baud_rate"))
        self.assertFalse(needs_restart("tunnel.3.keepalive"))

    def test_names_and_get(self):
        names = list(setting_names(self.config))
        self.assertIn("line.1.baud_rate", names)
        self.assertIn("tunnel.1.disconnect_timeout", names)
        self.assertIn("http.max_bytes", names)
        for name in names:
            get_setting(self.config, name)
        self.assertEqual(format_value(True), "on")
        self.assertEqual(format_value(("a", "b")), "a, b")

    def test_line_timing_settings(self):
        """The extra slack (seconds, 0..5) and the scan's tries after silence (0..3) apply live."""
        self.assertEqual((self.config.lines[1].extra_slack, self.config.lines[1].scan_silent_retries), (0.0, 1))
        c = apply_settings(self.config, {"line.1.extra_slack": "0.25", "line.1.scan_silent_retries": "0"})
        self.assertEqual((c.lines[1].extra_slack, c.lines[1].scan_silent_retries), (0.25, 0))
        self.assertFalse(needs_restart("line.1.extra_slack"))
        self.assertFalse(needs_restart("line.1.scan_silent_retries"))
        self.assertEqual(describe("line.1.extra_slack").unit, "s")
        with self.assertRaises(ConfigError) as cm:
            apply_setting(self.config, "line.1.extra_slack", "6")
        self.assertEqual(str(cm.exception), "Extra timeout slack of line 1: 6.0 is not allowed; use a number from 0 to 5 seconds")
        self.assertEqual(cm.exception.setting, "line.1.extra_slack")
        with self.assertRaises(ConfigError) as cm:
            apply_setting(self.config, "line.1.extra_slack", "soon")
        self.assertIn("use a number", str(cm.exception))
        self.assertRaises(ConfigError, apply_setting, self.config, "line.1.scan_silent_retries", "4")
