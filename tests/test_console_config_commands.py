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
        self.assertIn("http.http_port: 8080 takes effect after a restart", text)
        self.assertNotIn("line.1", text)
        self.assertNotIn("this run only", text)

    def test_show_settings_command_line(self):
        gateway = make_gateway(self, Overrides(tunnel="tcp:0:interface=127.0.0.1", http="tcp:8080"))
        gateway.running_config = gateway.overrides.apply(gateway.store.config)
        text = COMMANDS.run(Session(gateway), "show settings tunnel.1.listen")
        self.assertRegex(text, r"tunnel\.1\.listen\s+tcp:0:interface=127.0.0.1\s+tcp:0:interface=127.0.0.1")
        self.assertIn("the command line sets it for this run; the file holds tcp:10001", text)
        text = COMMANDS.run(Session(gateway), "show http.http_port")
        self.assertIn("http.http_port: the command line (--http tcp:8080) replaces this listener in this run", text)

    def test_show_settings_no_match(self):
        self.assertEqual(self.text("show settings xyz"),
                         "show settings: 'xyz' matches no setting; use a name or its beginning, such as line.1, "
                         "tunnel.1 or http ('help set' lists them)")
        self.assertIn("show: 'tunnel.7' is unknown; use one of status, network", self.text("show tunnel.7"))

    def test_show_takes_every_name_set_takes(self):
        """show NAME: a whole setting name, or a section such as tunnel.1 (its settings only)."""
        text = self.text("show tunnel.1")
        self.assertRegex(text, r"tunnel\.1\.keepalive\s+45\s+45")
        self.assertNotIn("line.1", text)
        text = self.text("show line.1.baud_rate")
        self.assertEqual(text.splitlines()[1:], ["  line.1.baud_rate  2400          2400"])
        self.assertIn("show SETTING", self.text("help show"))
        for name in ("network.dhcp", "http.max_bytes", "console.idle_timeout", "line.1", "tunnel.1.rfc2217"):
            self.assertIn(name, self.text(f"show {name}"))

    def test_set_saves(self):
        """set saves as the web page does: the file has the change, a fresh load keeps it."""
        self.assertEqual(self.text("set line.1.baud_rate 300"), "line.1.baud_rate = 300: applied at once; saved.")
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertFalse(self.gateway.store.unsaved)
        fresh = ConfigStore(self.gateway.store.path)
        fresh.load()
        self.assertEqual(fresh.config.lines[1].baud_rate, 300)

    def test_set_no_save(self):
        """set --no-save applies for this run only and says so; show and help tell the file's value."""
        self.assertEqual(self.text("set --no-save line.1.baud_rate 300"),
                         "line.1.baud_rate = 300: applied at once, for this run only; not saved ('save' keeps it).")
        self.assertEqual(self.gateway.running_config.lines[1].baud_rate, 300)
        self.assertTrue(self.gateway.store.unsaved)
        self.assertNotIn("baud_rate = 300", self.gateway.store.path.read_text())
        text = self.text("show line.1.baud_rate")
        self.assertRegex(text, r"line\.1\.baud_rate\s+300\s+2400")
        self.assertIn("changed for this run only (set --no-save); the file holds 2400", text)
        self.assertIn("Changed for this run only: 'save' keeps the changes; a restart drops them.", text)
        help_text = self.text("help set line.1.baud_rate")
        self.assertIn("line.1.baud_rate: Baud rate (baud); a change applies at once.", help_text)
        self.assertRegex(help_text, r"In force now\s+300")
        self.assertRegex(help_text, r"After a restart\s+2400")
        self.assertIn("set: 'http.http_port' takes effect only after a restart", self.text("set --no-save "
                                                                                          "http.http_port 8080"))
        self.assertEqual(self.gateway.store.config.http.http_port, 80)
        self.assertIn("The earlier changes for this run only were saved with it.",
                      self.text("set console.idle_timeout 60"))
        self.assertFalse(self.gateway.store.unsaved)

    def test_set_after_restart(self):
        self.assertEqual(self.text("set http.http_port 8080"),
                         "http.http_port = 8080: takes effect after a restart; saved.")
        self.assertEqual(self.gateway.running_config.http.http_port, 80)
        self.assertEqual(self.gateway.state.pending_restart(), ["http.http_port"])
        self.assertRegex(self.text("help set http.http_port"), r"In force now\s+80\n\s+After a restart\s+8080")

    def test_set_overridden_on_the_command_line(self):
        gateway = make_gateway(self, Overrides(tunnel="tcp:0:interface=127.0.0.1"))
        gateway.running_config = gateway.overrides.apply(gateway.store.config)
        text = COMMANDS.run(Session(gateway), "set tunnel.1.listen tcp:10005")
        self.assertIn("tunnel.1.listen = tcp:10005: applied at once; saved. Note: the command line sets it for "
                      "this run; the file holds tcp:10005.", text)

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
        self.assertIn("Baud rate of line 1: 1234", expected, "the label, not the dotted name")
        self.assertIn("1234", expected)
        self.assertIn("300", expected)
        self.assertFalse(self.gateway.store.unsaved)

    def test_set_errors(self):
        self.assertIn("set: 'network.hostname' is missing the value", self.text("set network.hostname"))
        self.assertIn("set: is missing the setting's name; use set [--no-save] NAME VALUE", self.text("set"))
        self.assertIn("set: 'line.1.baud_rate' is missing the value", self.text("set --no-save line.1.baud_rate"))
        self.assertEqual(self.text("passwd"), "passwd: is missing an argument; use passwd USER")
        self.assertIn("'help set' lists them", self.text("set nothing.here 1"))
        self.assertIn("start with a letter", self.text("set network.hostname 9abc"))
        self.assertIn("use on or off", self.text("set network.dhcp maybe"))
        self.assertIn("there is no line 3", self.text("set line.3.baud_rate 300"))

    def test_save(self):
        self.text("set --no-save line.1.baud_rate 300")
        self.text("set http.http_port 8080")
        self.text("set --no-save line.1.baud_rate 300")
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
