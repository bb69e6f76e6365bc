"""
Tests for cmegw.web.pages.meters: the Meters page and its JSON API, through
StubTreq against a real GatewayService whose master runs on a simulated bus
and task.Clock.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from cmegw.config.store import ConfigStore
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import Master
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.service import GatewayService, Overrides
from cmegw.state import BusView
from cmegw.web.app import admin_resource
from tests.support import open_pty
from tests.test_mbus_master import BusLine
from tests.web_helpers import settle_treq, to_next_call

BASE = "http://127.0.0.1:8080"
JSON = {b"content-type": [b"application/json"]}


class MetersPageTests(TestCase):
    def setUp(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        store = ConfigStore(folder / "cmegw.toml")
        store.load()
        master_fd, slave_fd, path = open_pty()
        self.addCleanup(os.close, master_fd)
        self.addCleanup(os.close, slave_fd)
        self.gateway = GatewayService(store, reactor, Overrides(device=path, tunnel="tcp:0:interface=127.0.0.1"))
        self.gateway.startService()
        self.addCleanup(self.gateway.stopService)
        self.assertIsInstance(self.gateway.masters[1], Master)
        self.clock = task.Clock()
        self.line = BusLine(MeterBus(default_meters()), self.clock)
        self.master = Master(1, BusArbiter(1, self.line, self.clock), self.clock)
        self.gateway.masters = {1: self.master}  # the same page, on a bus driven by the test's clock
        self.gateway.state.bus = {1: BusView(1, self.master)}
        self.http = StubTreq(admin_resource(self.gateway, clock=self.clock, web=lambda: None))

    def settle(self, d: defer.Deferred) -> Any:
        return settle_treq(self, self.http, d, to_next_call(self.clock), turns=200_000)

    def request(self, method: str, path: str, **kw: Any) -> tuple[Any, str]:
        response = self.settle(self.http.request(method, BASE + path, **kw))
        return response, self.settle(response.text())

    def form(self, path: str, fields: dict[str, str]) -> tuple[Any, str]:
        _, page = self.request("GET", "/meters")
        token = re.search(r'name="_csrf" value="([0-9a-f]+)"', page).group(1)
        return self.request("POST", path, data=urlencode({**fields, "_csrf": token}).encode(),
                            headers={b"content-type": [b"application/x-www-form-urlencoded"]})

    def test_scan_read_and_download(self) -> None:
        response, page = self.request("GET", "/meters")
        self.assertEqual(response.code, 200)
        self.assertIn("No meters found yet.", page)
        response, page = self.form("/meters/scan", {"line": "1", "kind": "secondary"})
        self.assertEqual(response.code, 200)
        self.assertRegex(page, r"The secondary scan of line 1 started at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; its "
                               "progress and result show below.")
        self.assertIn('http-equiv="refresh"', page, "the page follows a running scan")
        self.assertIn('id="scan-1" data-live="2"', page, "its parts update live every 2 s")
        self.assertIn("Stop the scan", page)
        self.settle(self.master.scan.deferred)
        response, page = self.request("GET", "/meters")
        self.assertNotIn('http-equiv="refresh"', page)
        for simulated in default_meters():
            self.assertIn(str(simulated.address), page)
        self.assertIn("Heat: Outlet", page)

        response, body = self.request("GET", "/meters/1/meters.csv")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        rows = list(csv.DictReader(io.StringIO(body)))
        self.assertEqual([r["secondary"] for r in rows], sorted(str(m.address) for m in default_meters()))
        self.assertEqual(rows[0]["manufacturer"], "KAM")
        response, body = self.request("GET", "/meters/1/meters.json")
        self.assertEqual(len(json.loads(body)), 4)

        response, page = self.form("/meters/read", {"line": "1", "address": "41520063-ELS-08-03"})
        self.assertEqual(response.code, 200)
        self.assertIn("Read the meter at secondary address 41520063-ELS-08-03.", page)
        reading = page[page.index('id="reading-1"'):]
        self.assertIn("<td>Elster (ELS)</td>", reading)
        self.assertIn("<td>8 (0x08)</td>", reading, "the version in decimal, hex marked")
        self.assertIn("<td>Kamstrup (KAM)</td>", page)
        self.assertIn("<td>25 (0x19)</td>", page)
        values = re.search(r'<table class="kv values">(.*?)</table>', reading, re.S).group(1)
        self.assertEqual(re.findall(r'<th scope="row">([^<]*)</th>', values)[:2], ["Volume", "Volume flow"],
                         "the counters first")
        self.assertIn("3\u202f214.56 m³", values)
        self.assertRegex(reading, r"meter's clock <time>2024-03-12 14:23:00</time>")
        detail = re.search(r"<summary>Every record as decoded \(15\)</summary>(.*?)</details>", reading, re.S).group(1)
        header = re.findall(r'<th scope="col">([^<]*)</th>', detail)
        self.assertEqual(header[:3], ["#", "Description", "Value"], "the description first")
        self.assertIn("Storage", header, "the meter sends stored values")
        for column in ("Scale", "Tariff", "Subunit"):
            self.assertNotIn(column, header, "no column that says nothing")
        self.assertNotIn("m^3", reading)
        response, body = self.request("GET", "/meters/1/reading.csv")
        lines = body.splitlines()
        self.assertTrue(lines[0].startswith("# meter,secondary address 41520063-ELS-08-03"))
        self.assertEqual(len(lines), 2 + 15)
        reading = json.loads(self.request("GET", "/meters/1/reading.json")[1])
        self.assertEqual(reading["telegrams"], 2)
        self.assertEqual(reading["meter"]["medium_name"], "Gas")
        self.assertEqual(reading["meter"]["manufacturer_name"], "Elster")

    def test_read_errors(self) -> None:
        response, page = self.form("/meters/read", {"line": "1", "address": "77"})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), "the result is a page")
        self.assertIn("the meter at address 77 did not answer (4 tries)", page)
        response, page = self.form("/meters/read", {"line": "1", "address": "banana"})
        self.assertEqual(response.code, 400)
        self.assertIn("Not read: &#x27;banana&#x27; is not a meter address; type a primary address (0 to 250) or a "
                      "secondary address (12345678-KAM-19-04, or its 16 hex digits).", page.replace("'", "&#x27;"))
        self.assertNotIn("BANANA", page, "no echo of the decoder's")
        for typed, said in (("300", "Not read: primary address 300 is outside 0..250 (or 254)."),
                            ("", "Type the meter&#x27;s address")):
            response, page = self.form("/meters/read", {"line": "1", "address": typed})
            self.assertEqual(response.code, 400)
            self.assertIn(said, page.replace("'", "&#x27;"))
        response, _ = self.form("/meters/read", {"line": "9", "address": "1"})
        self.assertEqual(response.code, 400)
        response, _ = self.request("GET", "/meters/1/reading.csv")
        self.assertEqual(response.code, 404)

    def test_stop_and_csrf(self) -> None:
        self.form("/meters/scan", {"line": "1", "kind": "primary"})
        response, page = self.form("/meters/scan", {"line": "1", "kind": "primary"})
        self.assertEqual(response.code, 409)
        self.assertNotIn('http-equiv="refresh"', page, "the refusal's page does not send the scan again by itself")
        self.assertIn('<noscript><meta http-equiv="refresh"', self.request("GET", "/meters")[1], "the page does")
        response, page = self.form("/meters/stop", {"line": "1"})
        self.assertIn("The scan of line 1 was stopped.", page)
        self.assertEqual(self.master.scan.state, "cancelled")
        response, _ = self.request("POST", "/meters/scan", data=b"line=1",
                                   headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.code, 403)

    def test_api_scan_without_tries_again_on_silence(self) -> None:
        response, body = self.request("POST", "/api/meters/1/scan", data=b'{"silent_retries": 0}', headers=JSON)
        self.assertEqual(response.code, 202, body)
        self.assertEqual(json.loads(body)["silent_retries"], 0)
        self.settle(self.master.scan.deferred)
        scan = json.loads(self.request("GET", "/api/meters/1")[1])["scan"]
        self.assertEqual(scan["state"], "done")
        self.assertGreater(scan["elapsed"], scan["floor"])
        self.assertLess(scan["elapsed"], 1.2 * scan["floor"], "one try per silent address, near the floor")
        for wrong in (b'{"silent_retries": "no"}', b'{"silent_retries": 9}'):
            response, body = self.request("POST", "/api/meters/1/scan", data=wrong, headers=JSON)
            self.assertEqual(response.code, 400, body)
            self.assertIn("after silence", body)

    def test_api(self) -> None:
        response, body = self.request("POST", "/api/meters/1/scan", data=b'{"kind": "primary"}', headers=JSON)
        self.assertEqual(response.code, 202)
        self.assertEqual(json.loads(body)["state"], "running")
        response, body = self.request("POST", "/api/meters/1/scan", data=b"{}", headers=JSON)
        self.assertEqual(response.code, 409)
        self.settle(self.master.scan.deferred)
        view = json.loads(self.request("GET", "/api/meters/1")[1])
        self.assertEqual(view["scan"]["state"], "done")
        self.assertEqual([m["primary"] for m in view["results"]["primary"]], [1, 2, 5, 10])
        self.assertEqual(view["results"]["primary"][2]["secondary"], "30405060-ABB-20-02", "identified")
        self.assertGreater(view["bus"]["transactions"], 251)
        self.assertIn("1", json.loads(self.request("GET", "/api/meters")[1])["lines"])

        response, body = self.request("POST", "/api/meters/1/read", data=b'{"address": 5}', headers=JSON)
        self.assertEqual(response.code, 200)
        reading = json.loads(body)
        self.assertEqual(reading["meter"]["secondary"], "30405060-ABB-20-02")
        self.assertEqual(len(reading["records"]), 12, "the raw records stay")
        self.assertEqual((reading["meter"]["manufacturer"], reading["meter"]["manufacturer_name"]), ("ABB", "ABB"))
        self.assertEqual((reading["meter"]["version"], reading["meter"]["version_text"]), (32, "32 (0x20)"),
                         "the number stays; the text marks the hex")
        self.assertEqual(reading["values"][0]["text"], "5\u202f432.10 kWh", "the main registers as the pages show")
        self.assertEqual({"key", "label", "value", "unit", "text"}, set(reading["values"][0]))
        self.assertEqual(reading["status_flags"], [])
        self.assertEqual(json.loads(self.request("GET", "/api/meters/1/reading")[1]), reading)
        response, body = self.request("POST", "/api/meters/1/read", data=b'{"address": "3"}', headers=JSON)
        self.assertEqual(response.code, 502)
        self.assertIn("the meter at address 3 did not answer", json.loads(body)["error"])
        response, _ = self.request("POST", "/api/meters/1/read", data=b'{"address": "x"}', headers=JSON)
        self.assertEqual(response.code, 400)
        response, _ = self.request("POST", "/api/meters/1/read", data=b'{"address": 5}')
        self.assertEqual(response.code, 415, "a form post from another site cannot read meters")
        response, _ = self.request("GET", "/api/meters/7")
        self.assertEqual(response.code, 404)

        self.request("POST", "/api/meters/1/scan", data=b'{"kind": "secondary"}', headers=JSON)
        response, body = self.request("DELETE", "/api/meters/1/scan")
        self.assertEqual((response.code, json.loads(body)["state"]), (200, "cancelled"))
        response, _ = self.request("DELETE", "/api/meters/1/scan")
        self.assertEqual(response.code, 409)
