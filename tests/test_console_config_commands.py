"""
Tests for cmegw.console.config_commands: ``show settings``, ``set`` and ``save``.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.console.commands import COMMANDS
from cmegw.console.framework import Session
from cmegw.service import Overrides
from tests.test_console_framework import CommandTestMixin, make_gateway


class ConfigCommandTests(CommandTestMixin, TestCase):
    """show settings, set, save."""

    def test_show_settings(self):
        text = self.text("show settings")
        self.assertRegex(text, r"line\.1\.baud_rate\s+2400\s+2400")
        self.assertRegex(text, r"console\.idle_timeout\s+300\s+300")
        self.text("set http.http_port 8080")
        text = self.text("show settings http")
        self.assertRegex(text, r"http\.http_port\s+80\s+8080")
        self.assertNotIn("line.1", text)
        self.assertIn("Not saved yet", text)

    def test_show_settings_command_line(self):
        gateway = make_gateway(self, Overrides(tunnel="tcp:0:interface=127.0.0.1"))
        gateway.running_config = gateway.overrides.apply(gateway.store.config)
        text = COMMANDS.run(Session(gateway), "show settings tunnel.1.listen")
        self.assertRegex(text, r"tunnel\.1\.listen\s+tcp:0:interface=127.0.0.1\s+tcp:0:interface=127.0.0.1")
        self.assertIn("the command line sets it for this run; the file holds 'tcp:10001'", text)

    def test_show_settings_no_match(self):
        self.assertEqual(self.text("show settings xyz"),
                         "show settings: 'xyz' matches no setting; use the beginning of a name, such as line.1 or http")

    def test_set_live(self):
        self.assertEqual(self.text("set line.1.baud_rate 300"),
                         "line.1.baud_rate = 300: applied at once; not saved ('save' keeps it).")
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.store.config.lines[1].baud_rate, 300)
        self.assertTrue(self.gateway.store.unsaved)
        self.assertNotIn("baud_rate = 300", self.gateway.store.path.read_text())

    def test_set_after_restart(self):
        self.assertEqual(self.text("set http.http_port 8080"),
                         "http.http_port = 8080: takes effect after a restart; not saved ('save' keeps it).")
        self.assertEqual(self.gateway.running_config.http.http_port, 80)
        self.assertEqual(self.gateway.state.pending_restart(), ["http.http_port"])

    def test_set_text_with_spaces_and_empty(self):
        self.text('set http.log_format %h %t "%r" %s')
        self.assertEqual(self.gateway.store.config.http.log_format, '%h %t "%r" %s')
        self.text("set network.ip_address 192.168.1.1 255.255.0.0")
        self.assertEqual(self.gateway.store.config.network.netmask, "255.255.0.0")
        self.text('set network.hostname ""')
        self.assertEqual(self.gateway.store.config.network.hostname, "")

    def test_set_message_is_the_model_message(self):
        """The same validation and message as the web page: apply_setting's ConfigError."""
        try:
            apply_setting(self.gateway.store.config, "line.1.baud_rate", "1234")
        except ValueError as e:
            expected = f"set: {e}"
        self.assertEqual(self.text("set line.1.baud_rate 1234"), expected)
        self.assertIn("line.1.baud_rate", expected)
        self.assertIn("1234", expected)
        self.assertIn("300", expected)
        self.assertFalse(self.gateway.store.unsaved)

    def test_set_errors(self):
        self.assertIn("set: 'network.hostname' is missing the value", self.text("set network.hostname"))
        self.assertIn("set: is missing the setting's name; use set NAME VALUE", self.text("set"))
        self.assertEqual(self.text("passwd"), "passwd: is missing an argument; use passwd USER")
        self.assertIn("'help set' lists them", self.text("set nothing.here 1"))
        self.assertIn("start with a letter", self.text("set network.hostname 9abc"))
        self.assertIn("use on or off", self.text("set network.dhcp maybe"))
        self.assertIn("there is no line 3", self.text("set line.3.baud_rate 300"))

    def test_save(self):
        self.text("set line.1.baud_rate 300")
        self.text("set http.http_port 8080")
        text = self.text("save")
        self.assertIn(f"Saved to {self.gateway.store.path}.", text)
        self.assertIn("after a restart ('restart'): http.http_port", text)
        self.assertFalse(self.gateway.store.unsaved)
        fresh = ConfigStore(self.gateway.store.path)
        fresh.load()
        self.assertEqual(fresh.config.lines[1].baud_rate, 300)

    def test_complete_settings(self):
        self.assertEqual(COMMANDS.complete(self.session, "set line.1.ba"), ["line.1.baud_rate"])
        self.assertIn("http.max_bytes", COMMANDS.complete(self.session, "set http."))
        self.assertEqual(COMMANDS.complete(self.session, "set network.dhcp "), ["off", "on"])
        self.assertIn("300", COMMANDS.complete(self.session, "set line.1.baud_rate "))
        self.assertEqual(COMMANDS.complete(self.session, "show settings tunnel.1.k"), ["tunnel.1.keepalive"])
