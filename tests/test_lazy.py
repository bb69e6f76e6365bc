"""Tests for cmegw.lazy: a package's names imported on first use."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

import cmegw.tls
from cmegw.lazy import lazy_names
from tests.support import REPO


class LazyNamesTests(TestCase):
    def test_name_from_its_module(self):
        from cmegw.tls.store import TlsManager

        self.assertIs(cmegw.tls.TlsManager, TlsManager)

    def test_unknown_name(self):
        getattr_ = lazy_names("cmegw.tls", {})
        with self.assertRaises(AttributeError) as caught:
            getattr_("Nothing")
        self.assertIn("'cmegw.tls' has no attribute 'Nothing'", str(caught.exception))

    def test_importing_the_package_loads_nothing_heavy(self):
        code = "import sys, cmegw.tls, cmegw.host, cmegw.tunnel; print('cryptography' in sys.modules, " \
               "'cmegw.tunnel.accept' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.assertEqual(out.stdout.split(), ["False", "False"], out.stderr)


#: Run in a fresh interpreter: the daemon's service on the factory defaults (listeners moved to
#: loopback port 0, a line whose adapter is missing), started until every listener is up; then
#: the modules it has loaded, one a line.
_STARTED_SERVICE = """
import sys
from pathlib import Path
from cmegw.tap import default_reactor, part_factories
reactor = default_reactor()
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
store = ConfigStore(Path(sys.argv[1]) / "cmegw.toml")
store.load()
local = "tcp:0:interface=127.0.0.1"
gateway = GatewayService(store, reactor, Overrides(device="/nonexistent/ttyUSB9", tunnel=local, http=local,
                                                   https=local, console=local), parts=part_factories())
gateway.startService()
def stop_when_listening():
    done = gateway.when_listening()
    done.addCallback(lambda _: print("listening"))
    done.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(stop_when_listening)
timeout = reactor.callLater(30, reactor.stop)
reactor.run()
print("\\n".join(sorted(sys.modules)))
"""


class LoadedOnUseTests(TestCase):
    """What the factory configuration does not use is not imported by the running service."""

    def test_factory_configuration_leaves_unused_parts_unloaded(self):
        folder = self.mktemp()
        os.makedirs(folder)
        out = subprocess.run([sys.executable, "-c", _STARTED_SERVICE, folder], capture_output=True, text=True,
                             timeout=90, env=dict(os.environ, PYTHONPATH=str(REPO)))
        modules = set(out.stdout.split())
        self.assertIn("listening", modules, out.stderr[-2000:])
        self.assertIn("cmegw.tunnel.accept", modules, out.stderr[-2000:])
        self.assertIn("cmegw.web.app", modules, "the web administration runs")
        unused = {"twisted.conch.ssh": "SSH console (console.ssh_enabled)", "paho": "MQTT target",
                  "cmegw.readout.mqtt_link": "MQTT target", "cmegw.tunnel.rfc2217": "RFC 2217 tunnel",
                  "cmegw.tunnel.sharing": "shared tunnel", "cmegw.console.ssh": "SSH console"}
        self.assertEqual({name: why for name, why in unused.items() if name in modules}, {})
