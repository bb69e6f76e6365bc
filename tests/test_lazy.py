"""Tests for cmegw.lazy: a package's names imported on first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

import cmegw
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


#: Connect mode's modules: loaded when a tunnel's configuration first turns connect mode on.
CONNECT_MODE_MODULES = ("cmegw.tunnel.connect", "cmegw.tunnel.connectfactory", "cmegw.tunnel.dialing")
#: The readings' views and payload tables: loaded by the first page, API answer or command that shows a reading.
READING_MODULES = ("cmegw.readout.views", "cmegw.readout.payload", "cmegw.readout.manufacturers")
#: The System page's software update machinery: loaded when an update is first asked for.
UPDATE_MODULE = "cmegw.web.pages.system_update"

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
                  "cmegw.tunnel.sharing": "shared tunnel", "cmegw.console.ssh": "SSH console",
                  **{name: "connect mode" for name in CONNECT_MODE_MODULES},
                  UPDATE_MODULE: "the System page's software update",
                  **{name: "a reading shown" for name in READING_MODULES}, "cmegw.readout.meterlist": "meter list CSV"}
        self.assertEqual({name: why for name, why in unused.items() if name in modules}, {})
        self.assertIn("cmegw.web.pages.system", modules, "the System page is there, its update machinery is not")


#: The end of each fresh-process script below: once every listener is up, its ``use()`` runs (a Deferred or
#: not), then the reactor stops and the script prints its ``report`` as JSON (with "error" if ``use`` failed).
_REPORT_WHEN_LISTENING = """
def stop_when_listening():
    done = gateway.when_listening()
    done.addCallback(use)
    done.addErrback(lambda f: report.setdefault("error", f.getTraceback()))
    done.addBoth(lambda _: reactor.stop())
reactor.callWhenRunning(stop_when_listening)
timeout = reactor.callLater(60, reactor.stop)
reactor.run()
print(json.dumps(report))
"""


#: Run in a fresh interpreter: the daemon's service on the factory defaults read from an existing file (as
#: bench/gwbench's configuration is: web on HTTP and HTTPS, telnet console, the line on a pty, all on loopback
#: port 0), started until every listener is up; the modules loaded then, and then each lazy part used once:
#: one JSON line ``{"started": [modules], "used": {part: what it gave}, "loaded": [modules]}``.
_BENCH_LIKE_SERVICE = """
import json, os, sys
from pathlib import Path
from cmegw.tap import default_reactor, part_factories
reactor = default_reactor()
from twisted.internet import defer, task
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
def use(_):
    report["started"] = sorted(sys.modules)
    import mimetypes
    report["mime_database_read"] = mimetypes.inited
    from cmegw.web.pages.readout_views import reading_json
    used["reading"] = reading_json({"status": 4, "meter": {"manufacturer": "KAM", "version": 25}, "records": [
        {"quantity": "Energy", "function": "Instantaneous value", "value": 48213000, "unit": "Wh", "scale": 3}]})
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
    answer = http.get("http://127.0.0.1/readouts/meters.csv")
    http.flush()
    response = yield answer
    body = yield treq.content(response)
    used["meter_list"] = [response.code, body.decode("utf-8").splitlines()[:1]]
    readings = gateway.readout.store
    yield readings.open()
    used["store"] = (yield readings.meters())
    yield readings.close()
    used["host"] = gateway.netapply.backend("networkd").name
    from cmegw.ops.chart import runs
    used["chart"] = runs([(0, 1.0), (10, 2.0), (20, 3.0), (100, 4.0)])
    answer = http.get("http://127.0.0.1/trace/1")
    http.flush()
    response = yield answer
    body = yield treq.content(response)
    used["trace_page"] = [response.code, "off, nothing recorded" in body.decode("utf-8")]
    report["trace_page_decoder"] = "cmegw.mbus.records._decode" in sys.modules
    gateway.set_trace(1, True)
    from cmegw.mbus import records
    os.write(master, records.rsp_ud(5, records.Header(None, 3, 0, 0), [records.scaled("energy", 1234000, 3)]))
    for _ in range(200):
        if gateway.state.traces[1].frames():
            break
        yield task.deferLater(reactor, 0.025, lambda: None)
    used["trace"] = [label.as_dict().get("records") for label in gateway.state.traces[1].frames()]
    report["loaded"] = sorted(sys.modules)

""" + _REPORT_WHEN_LISTENING

#: What the bench-like configuration does not use, each loaded on first use; the module and what loads it.
LAZY_PARTS = {
    "tomlkit": "save", "cmegw.console.mbus_commands": "console", "cmegw.console.readout_commands": "console",
    "cmegw.console.backup_commands": "console", "prometheus_client": "metrics", "cmegw.ops.metrics": "metrics",
    "sqlite3": "store", "cmegw.readout._storedb": "store", "cmegw.host.networkd": "host", "statistics": "chart",
    "cmegw.ops.trace": "trace_page", "cmegw.ops.labels": "trace_page", "cmegw.mbus.records._decode": "trace",
    "cmegw.mbus.records._units": "trace",
    "cmegw.mbus.records._encode": "trace",
    "cmegw.readout.views": "reading", "cmegw.readout.payload": "reading", "cmegw.readout.manufacturers": "reading",
    "cmegw.readout.meterlist": "meter_list",
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
        self.assertEqual([v["text"] for v in used["reading"]["values"]], ["48\u202f213 kWh"], "a reading is shown")
        self.assertEqual(used["reading"]["meter"]["manufacturer_name"], "Kamstrup")
        self.assertEqual(used["reading"]["status_flags"], ["power low"])
        self.assertEqual(used["meter_list"], [200, ["id,line,address,name,interval,enabled"]])
        self.assertGreater(used["metrics"][1], 10)
        self.assertEqual(used["store"], [])
        self.assertEqual(used["host"], "networkd")
        self.assertEqual(used["chart"], [[[0, 1.0], [10, 2.0], [20, 3.0]], [[100, 4.0]]])
        self.assertEqual(used["trace_page"], [200, True])
        self.assertIs(report["trace_page_decoder"], False, "a trace page with nothing recorded decodes nothing")
        self.assertEqual(used["trace"], [[{"function": "Instantaneous value", "storage": 0, "tariff": 0, "subunit": 0,
                                           "quantity": "Energy", "value": 1234000, "unit": "Wh"}]],
                         "the line's telegram is decoded in the trace")


#: Run in a fresh interpreter: the daemon's service on the factory defaults, its line on a pty, and a head-end
#: listening on loopback port 0.  Tunnel 1's connect mode (always, to the head-end) is turned on in the file
#: before the start (``sys.argv[2] == "start"``) or by a change once every listener is up (``"live"``); the
#: head-end sends ``from head-end`` and the line's side ``from the line``.  One JSON line: connect mode's modules
#: loaded once the service listens, the head-end's connections, what each side received, connect mode's state,
#: and connect mode's modules loaded at the end.
_CONNECT_MODE_SERVICE = """
import json, os, sys
from pathlib import Path
from cmegw.tap import default_reactor, part_factories
reactor = default_reactor()
from twisted.internet import defer, protocol, task
from cmegw.config.settings import apply_setting
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
MODULES = %r
report = {"connections": 0, "head_end_got": "", "line_got": ""}

class HeadEnd(protocol.Protocol):
    def connectionMade(self):
        report["connections"] += 1
        self.transport.write(b"from head-end")

    def dataReceived(self, data):
        report["head_end_got"] += data.decode("ascii", "replace")

head_end = reactor.listenTCP(0, protocol.Factory.forProtocol(HeadEnd), interface="127.0.0.1")
master, slave = os.openpty()
os.set_blocking(master, False)
store = ConfigStore(Path(sys.argv[1]) / "cmegw.toml")
store.load()

def connect_mode_on():
    config = apply_setting(store.config, "tunnel.1.connect_hosts",
                           f"tcp:host=127.0.0.1:port={head_end.getHost().port}")
    store.change(apply_setting(config, "tunnel.1.connect_mode", "always"))

if sys.argv[2] == "start":
    connect_mode_on()
local = "tcp:0:interface=127.0.0.1"
gateway = GatewayService(store, reactor, Overrides(device=os.ttyname(slave), tunnel=local, http=local,
                                                   https=local, console=local), parts=part_factories())
gateway.startService()

def read_line():
    try:
        report["line_got"] += os.read(master, 4096).decode("ascii", "replace")
    except BlockingIOError:
        pass

@defer.inlineCallbacks
def use(_):
    report["listening"] = [name for name in MODULES if name in sys.modules]
    if sys.argv[2] == "live":
        connect_mode_on()
    for _ in range(400):
        read_line()
        if report["connections"] and gateway.state.connect_stats[1].state == "connected":
            break
        yield task.deferLater(reactor, 0.025, lambda: None)
    os.write(master, b"from the line")
    for _ in range(400):
        read_line()
        if "from head-end" in report["line_got"] and "from the line" in report["head_end_got"]:
            break
        yield task.deferLater(reactor, 0.025, lambda: None)
    report["state"] = gateway.state.connect_stats[1].text(reactor.seconds())
    report["loaded"] = [name for name in MODULES if name in sys.modules]
    yield gateway.stopService()

""" % (CONNECT_MODE_MODULES,) + _REPORT_WHEN_LISTENING

#: Run in a fresh interpreter: the daemon's service on the factory defaults, started until every listener is up;
#: then the System page, ``/api/status`` and ``/api/update`` are asked for (they show the update's state), then
#: an update is sent that is not a wheel.  One JSON line: what each answered, and whether the update machinery
#: was loaded before the update was sent and after.
_UPDATE_SERVICE = """
import json, sys
from pathlib import Path
from cmegw.tap import default_reactor, part_factories
reactor = default_reactor()
from twisted.internet import defer
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
MODULE = %r
store = ConfigStore(Path(sys.argv[1]) / "cmegw.toml")
store.load()
local = "tcp:0:interface=127.0.0.1"
gateway = GatewayService(store, reactor, Overrides(device="/nonexistent/ttyUSB9", tunnel=local, http=local,
                                                   https=local, console=local), parts=part_factories())
gateway.startService()
report = {}

@defer.inlineCallbacks
def use(_):
    import treq
    from treq.testing import StubTreq
    from cmegw.web.app import admin_resource
    http = StubTreq(admin_resource(gateway))

    def answer(request):
        http.flush()
        response = yield request
        body = yield treq.content(response)
        return [response.code, body.decode("utf-8", "replace")]

    for path in ("/system", "/api/status", "/api/update"):
        report[path] = yield from answer(http.get("http://127.0.0.1" + path))
    report["loaded_before"] = MODULE in sys.modules
    report["refused"] = yield from answer(http.post(
        "http://127.0.0.1/api/update", data=b"not a wheel",
        headers={b"content-type": [b"application/octet-stream"], b"x-filename": [b"cmegw-9.9-py3-none-any.whl"]}))
    report["loaded_after"] = MODULE in sys.modules
    report["after"] = yield from answer(http.get("http://127.0.0.1/api/update"))

""" % (UPDATE_MODULE,) + _REPORT_WHEN_LISTENING


def run_fresh(testcase: TestCase, script: str, *args: str) -> dict:
    """`script` run in a fresh interpreter with a folder of its own: the JSON line it printed last."""
    folder = testcase.mktemp()
    os.makedirs(folder)
    out = subprocess.run([sys.executable, "-c", script, folder, *args], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    testcase.assertTrue(out.stdout.strip(), out.stderr[-3000:])
    report = json.loads(out.stdout.strip().splitlines()[-1])
    testcase.assertNotIn("error", report, report.get("error"))
    return report


class ConnectModeOnUseTests(TestCase):
    """Connect mode loads when a tunnel's configuration turns it on, at the start or live, and then dials."""

    def assertConnected(self, report: dict) -> None:
        self.assertEqual(report["loaded"], list(CONNECT_MODE_MODULES))
        self.assertEqual(report["connections"], 1)
        self.assertRegex(report["state"], r"^connected to 127\.0\.0\.1:\d+$")
        self.assertIn("from head-end", report["line_got"], "the head-end's bytes reach the line")
        self.assertIn("from the line", report["head_end_got"], "the line's bytes reach the head-end")

    def test_configured_at_start(self):
        report = run_fresh(self, _CONNECT_MODE_SERVICE, "start")
        self.assertEqual(report["listening"], list(CONNECT_MODE_MODULES))
        self.assertConnected(report)

    def test_turned_on_live(self):
        report = run_fresh(self, _CONNECT_MODE_SERVICE, "live")
        self.assertEqual(report["listening"], [], "not loaded before the change")
        self.assertConnected(report)


class UpdateOnUseTests(TestCase):
    """The System page and the update's status show the idle state without the update machinery; it loads when
    an update is sent, and then works (it verifies the file: here it refuses it)."""

    def test_update_machinery_loads_when_an_update_is_sent(self):
        report = run_fresh(self, _UPDATE_SERVICE)
        code, page = report["/system"]
        self.assertEqual(code, 200)
        self.assertIn("Verify, install and restart", page)
        self.assertNotIn("Last update:", page)
        code, status = report["/api/status"]
        self.assertEqual((code, json.loads(status)["update"]), (200, IDLE_UPDATE))
        code, update = report["/api/update"]
        self.assertEqual((code, json.loads(update)), (200, {"running_version": cmegw.__version__, **IDLE_UPDATE}))
        self.assertIs(report["loaded_before"], False, "showing the update's state does not load the machinery")
        code, refused = report["refused"]
        self.assertEqual(code, 400)
        self.assertIn("not installed: the file is not a valid zip archive", json.loads(refused)["error"])
        self.assertIs(report["loaded_after"], True)
        self.assertEqual(json.loads(report["after"][1])["phase"], "idle", "a refused file changes nothing")


#: The update's state before any update: what the page and the API showed before the machinery was lazy.
IDLE_UPDATE = {"phase": "idle", "message": "", "version": "", "output": ""}
