"""Tests for cmegw.lazy: a package's names imported on first use."""

from __future__ import annotations

import json
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


#: Run in a fresh interpreter: the daemon's service on the factory defaults read from an existing file (as
#: bench/gwbench's configuration is: web on HTTP and HTTPS, telnet console, the line on a pty, all on loopback
#: port 0), started until every listener is up; the modules loaded then, and then each lazy part used once:
#: one JSON line ``{"started": [modules], "used": {part: what it gave}, "loaded": [modules]}``.
_BENCH_LIKE_SERVICE = """
import json, os, sys
from pathlib import Path
from cmegw.tap import default_reactor, part_factories
reactor = default_reactor()
from twisted.internet import defer
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
master, slave = os.openpty()
path = Path(sys.argv[1]) / "cmegw.toml"
store = ConfigStore(path)
store.load()
local = "tcp:0:interface=127.0.0.1"
gateway = GatewayService(store, reactor, Overrides(device=os.ttyname(slave), tunnel=local, http=local, https=local,
                                                   console=local), parts=part_factories())
gateway.startService()
report = {"used": {}}
used = report["used"]

@defer.inlineCallbacks
def use_each(_):
    report["started"] = sorted(sys.modules)
    import mimetypes
    report["mime_database_read"] = mimetypes.inited
    store.save()
    used["save"] = ConfigStore(path).load() == store.config
    from cmegw.console.framework import Session
    from cmegw.console.service import ConsoleService
    console = next(part for part in gateway if isinstance(part, ConsoleService)).console
    reply = console.table.run(Session(gateway, "admin"), "help mbus")
    used["console"] = getattr(reply, "text", reply)[:200]
    import treq
    from treq.testing import StubTreq
    from cmegw.web.app import admin_resource
    http = StubTreq(admin_resource(gateway))
    answer = http.get("http://127.0.0.1/metrics")
    http.flush()
    response = yield answer
    body = yield treq.content(response)
    used["metrics"] = [response.code, body.count(b"cmegw_")]
    readings = gateway.readout.store
    yield readings.open()
    used["store"] = (yield readings.meters())
    yield readings.close()
    used["host"] = gateway.netapply.backend("networkd").name
    from cmegw.ops.chart import runs
    used["chart"] = runs([(0, 1.0), (10, 2.0), (20, 3.0), (100, 4.0)])
    report["loaded"] = sorted(sys.modules)

def stop_when_listening():
    done = gateway.when_listening()
    done.addCallback(use_each)
    done.addErrback(lambda f: report.setdefault("error", f.getTraceback()))
    done.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(stop_when_listening)
timeout = reactor.callLater(60, reactor.stop)
reactor.run()
print(json.dumps(report))
"""

#: What the bench-like configuration does not use, each loaded on first use; the module and what loads it.
LAZY_PARTS = {
    "tomlkit": "save", "cmegw.console.mbus_commands": "console", "cmegw.console.readout_commands": "console",
    "cmegw.console.backup_commands": "console", "prometheus_client": "metrics", "cmegw.ops.metrics": "metrics",
    "sqlite3": "store", "cmegw.readout._storedb": "store", "cmegw.host.networkd": "host", "statistics": "chart",
}


class LoadedOnFirstUseTests(TestCase):
    """On a start from the bench's configuration (a file that exists, nothing to write), the parts it does not
    use yet are not imported; each loads when it is first used and then works."""

    def test_bench_configuration_loads_each_part_on_first_use(self):
        from tests.support import defaults_with

        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, "cmegw.toml"), "w", encoding="utf-8") as f:
            f.write(defaults_with())
        out = subprocess.run([sys.executable, "-c", _BENCH_LIKE_SERVICE, folder], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.assertTrue(out.stdout.strip(), out.stderr[-3000:])
        report = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertNotIn("error", report, report.get("error"))
        started, loaded, used = set(report["started"]), set(report["loaded"]), report["used"]
        self.assertIn("cmegw.web.app", started)
        self.assertIn("cmegw.console.protocol", started)
        self.assertEqual(sorted(name for name in LAZY_PARTS if name in started), [])
        self.assertIs(report["mime_database_read"], False)  # the static files' types come from cmegw.web.app
        self.assertEqual(sorted(name for name in LAZY_PARTS if name not in loaded), [])
        self.assertIs(used["save"], True)
        self.assertIn("mbus", used["console"])
        self.assertEqual(used["metrics"][0], 200)
        self.assertGreater(used["metrics"][1], 10)
        self.assertEqual(used["store"], [])
        self.assertEqual(used["host"], "networkd")
        self.assertEqual(used["chart"], [[[0, 1.0], [10, 2.0], [20, 3.0]], [[100, 4.0]]])
