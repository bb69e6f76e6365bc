"""Tests for cmegw.config.backup: the backup leaves the secrets out, a restore keeps them and checks the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
from twisted.trial.unittest import TestCase

from cmegw.config import auth as config_auth
from cmegw.config.backup import backup_text, line_of, restore
from cmegw.config.readout import PushConfig
from cmegw.config.settings import apply_settings
from cmegw.config.store import ConfigFileError, ConfigStore


class BackupTests(TestCase):
    def setUp(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir()
        self.store = ConfigStore(folder / "cmegw.toml")
        config = self.store.load()
        config = config.evolve(mqtt=attrs.evolve(config.mqtt, url="mqtt://127.0.0.1:1883", username="gw",
                                                 password="mqtt-secret"),
                               push={1: PushConfig(url="https://head-end.example/in", auth="bearer",
                                                   token="push-token")})
        config = config_auth.add_user(config, "/", "ops", "ops-password")
        self.store.change(config)
        self.config = self.store.config
        self.text = backup_text(self.config, self.store.render(self.config), version="1.2.3",
                                when="2026-12-07 11:00 UTC")

    def test_secrets_left_out_and_said_so(self) -> None:
        for secret in ("mqtt-secret", "push-token", *(u.ha1_md5 for u in self.config.auth[0].users),
                       *(u.ha1_sha256 for u in self.config.auth[0].users)):
            self.assertNotIn(secret, self.text)
        data = tomllib.loads(self.text)
        self.assertNotIn("password", data["mqtt"])
        self.assertNotIn("token", data["push"]["1"])
        self.assertEqual(data["mqtt"]["username"], "gw")
        self.assertEqual([u["name"] for u in data["auth"][0]["user"]], ["admin", "ops"])
        header = self.text.split("\n\n", 1)[0]
        self.assertIn("Secrets are left out", header)
        self.assertIn("mqtt.password", header)
        self.assertIn("push.1.token", header)
        self.assertIn("software 1.2.3", header)
        self.assertIn("# ", self.text.split("[line.1]")[1][:200], "the file's own comments stay")

    def test_restore_of_the_backup_changes_nothing_and_keeps_the_secrets(self) -> None:
        result = restore(self.config, self.text)
        self.assertEqual(result.config, self.config)
        self.assertEqual(result.changed, ())
        self.assertIn("mqtt.password", result.kept)
        self.assertIn("push.1.token", result.kept)
        self.assertIn("the password of ops on /", result.kept)

    def test_restore_applies_a_change(self) -> None:
        text = self.text.replace("baud_rate = 2400", "baud_rate = 9600").replace(
            'username = "gw"', 'username = "gw2"')
        result = restore(self.config, text)
        self.assertEqual(result.config.lines[1].baud_rate, 9600)
        self.assertEqual(result.config.mqtt.password, "mqtt-secret")
        self.assertEqual(set(result.changed), {"line.1.baud_rate", "mqtt.username"})
        self.assertIn("line.1.baud_rate", result.applied_now)

    def test_a_secret_in_the_file_replaces_the_current_one(self) -> None:
        text = self.text.replace('username = "gw"', 'username = "gw"\npassword = "new-secret"')
        result = restore(self.config, text)
        self.assertEqual(result.config.mqtt.password, "new-secret")
        self.assertNotIn("mqtt.password", result.kept)
        self.assertIn("mqtt.password", result.changed)

    def test_serial_number_stays(self) -> None:
        text = self.text.replace(self.config.identity.serial_number, "OTHER-1")
        self.assertEqual(restore(self.config, text).config.identity.serial_number,
                         self.config.identity.serial_number)

    def test_bad_value_named_with_its_line(self) -> None:
        text = self.text.replace("baud_rate = 2400", "baud_rate = 1234")
        line = text.splitlines().index("baud_rate = 1234") + 1
        with self.assertRaises(ConfigFileError) as caught:
            restore(self.config, text)
        message = str(caught.exception)
        self.assertIn("setting line.1.baud_rate: Baud rate of line 1: 1234 is not allowed", message)
        self.assertIn(f"the uploaded file, line {line}: setting line.1.baud_rate", message)

    def test_not_toml_cut_short_and_unknown_user(self) -> None:
        with self.assertRaises(ConfigFileError) as caught:
            restore(self.config, self.text.replace("baud_rate = 2400", "baud_rate = "))
        self.assertIn("is not valid TOML", str(caught.exception))
        self.assertIn("line", str(caught.exception))
        with self.assertRaises(ConfigFileError) as caught:
            restore(self.config, self.text[:self.text.index("[tunnel.1]")])
        self.assertIn("is incomplete", str(caught.exception))
        with self.assertRaises(ConfigFileError) as caught:
            restore(self.config, self.text.replace('name = "ops"', 'name = "eve"'))
        self.assertIn("user 'eve' of the directive / has no password hashes", str(caught.exception))

    def test_restore_to_a_changed_realm_needs_the_hashes(self) -> None:
        text = self.text.replace('realm = "config"', 'realm = "other"', 1)
        with self.assertRaises(ConfigFileError):
            restore(self.config, text)

    def test_line_of(self) -> None:
        text = '[line.1]\nbaud_rate = 1\n[line."2"]\n# baud_rate = 3\n  baud_rate = 2\n'
        self.assertEqual(line_of(text, "line.1.baud_rate"), 2)
        self.assertEqual(line_of(text, "line.2.baud_rate"), 5)
        self.assertIsNone(line_of(text, "line.3.baud_rate"))

    def test_restore_of_a_new_push_target_without_token(self) -> None:
        text = self.text + '\n[push.2]\nurl = "https://other.example/in"\n'
        result = restore(self.config, text)
        self.assertEqual(result.config.push[2].token, "")
        self.assertIn("push.2.url", result.changed)

    def test_changes_validated_as_settings(self) -> None:
        """The restored value is the one `apply_settings` would have made."""
        text = self.text.replace("keepalive = 45", "keepalive = 60")
        self.assertEqual(restore(self.config, text).config,
                         apply_settings(self.config, {"tunnel.1.keepalive": 60}))
