"""Tests for cmegw.config.store: load, atomic save, last good copy, corrupt files."""

import os
import stat
from pathlib import Path
from unittest import mock

from twisted.trial.unittest import TestCase

from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore, factory_defaults_text


class StoreTests(TestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.path = self.dir / "cmegw.toml"

    def test_created_from_defaults(self):
        store = ConfigStore(self.path)
        config = store.load()
        self.assertTrue(self.path.exists())
        self.assertEqual(config.lines[1].baud_rate, 2400)
        self.assertTrue(config.identity.serial_number.startswith("CMEGW-"))
        self.assertIsNone(store.problem)
        self.assertFalse(store.unsaved)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertIn("# cmegw configuration.", self.path.read_text())

    def test_change_saves_and_keeps_comments(self):
        store = ConfigStore(self.path)
        store.load()
        text = self.path.read_text().replace("baud_rate = 2400", "# my own note\nbaud_rate = 2400  # keep me")
        self.path.write_text(text)
        store.load()
        seen = []
        store.subscribe(lambda old, new: seen.append((old.lines[1].baud_rate, new.lines[1].baud_rate)))
        store.change(apply_setting(store.config, "line.1.baud_rate", "300"))
        saved = self.path.read_text()
        self.assertIn("baud_rate = 300", saved)
        self.assertIn("# my own note", saved)
        self.assertIn("# Close the connection after this many seconds", saved)
        self.assertEqual(seen, [(2400, 300)])
        self.assertEqual(ConfigStore(self.path).load().lines[1].baud_rate, 300)
        self.assertEqual((self.dir / "cmegw.toml.last-good").read_text(), saved)
        self.assertFalse(list(self.dir.glob(".*.tmp")))

    def test_unsaved_change(self):
        store = ConfigStore(self.path)
        store.load()
        store.change(apply_setting(store.config, "line.1.baud_rate", "300"), save=False)
        self.assertTrue(store.unsaved)
        self.assertIn("baud_rate = 2400", self.path.read_text())
        store.save()
        self.assertFalse(store.unsaved)
        self.assertIn("baud_rate = 300", self.path.read_text())

    def test_corrupt_file_uses_last_good(self):
        store = ConfigStore(self.path)
        store.load()
        store.change(apply_setting(store.config, "line.1.baud_rate", "9600"))
        broken = "this is [not toml"
        self.path.write_text(broken)
        store = ConfigStore(self.path)
        config = store.load()
        self.assertEqual(config.lines[1].baud_rate, 9600)
        self.assertIn("not valid TOML", store.problem)
        self.assertEqual(self.path.read_text(), broken, "the bad file is left for the operator")

    def test_invalid_value_uses_factory_defaults_without_last_good(self):
        self.path.write_text(factory_defaults_text().replace("baud_rate = 2400", "baud_rate = 1234"))
        store = ConfigStore(self.path)
        config = store.load()
        self.assertEqual(config.lines[1].baud_rate, 2400)
        self.assertIn("setting line.1.baud_rate: Baud rate of line 1: 1234 is not allowed", store.problem)
        self.assertIn("baud_rate = 1234", self.path.read_text())

    def test_save_after_corrupt_keeps_rejected_copy(self):
        self.path.write_text("garbage = [")
        store = ConfigStore(self.path)
        store.load()
        store.change(apply_setting(store.config, "line.1.baud_rate", "300"))
        self.assertEqual((self.dir / "cmegw.toml.rejected").read_text(), "garbage = [")
        self.assertEqual(ConfigStore(self.path).load().lines[1].baud_rate, 300)

    def test_failed_write_leaves_old_file(self):
        store = ConfigStore(self.path)
        store.load()
        before = self.path.read_text()
        with mock.patch("os.fsync", side_effect=OSError(28, "No space left on device")):
            self.assertRaises(OSError, store.change, apply_setting(store.config, "line.1.baud_rate", "300"))
        self.assertEqual(self.path.read_text(), before)
        self.assertFalse(list(self.dir.glob(".*.tmp")))

    def test_factory_reset_keeps_serial(self):
        store = ConfigStore(self.path)
        serial = store.load().identity.serial_number
        store.change(apply_setting(store.config, "tunnel.1.keepalive", "5"))
        config = store.factory_reset()
        self.assertEqual(config.tunnels[1].keepalive, 45)
        self.assertEqual(config.identity.serial_number, serial)
        self.assertEqual(ConfigStore(self.path).load().tunnels[1].keepalive, 45)
