"""
Tests for cmegw.web.api_readout: the readouts' JSON API through StubTreq over
a fake gateway (`FakeReadout` in `fake_state`) with real readings decoded
from the simulated meters: shapes, status codes, the model's refusals, the
meter list's CSV round trip.
"""

from __future__ import annotations

import csv
import io

from cmegw.config.settings import label_of
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_DOWN, StoredReading, TargetStatus
from cmegw.testing import run_clock
from tests.readout_web_helpers import ERROR_2, T0, ReadoutWebCase, reading

CROSS_SITE = {b"origin": [b"http://evil.example"], b"host": [b"127.0.0.1:8080"]}


class ReadTests(ReadoutWebCase):
    def setUp(self) -> None:
        super().setUp()
        self.fill()
        self.readout.statuses = {"mqtt": TargetStatus("mqtt", TARGET_CONNECTED, delivered=40, last_delivery=T0),
                                 "push.1": TargetStatus("push.1", TARGET_DOWN, "connection refused", failures=3)}
        self.readout.backlogs = {"mqtt": (0, None), "push.1": (12, T0 - 600)}
        self.readout.kept = [reading("heat-1", 1, when=T0 - 3600 * (9 - i), id=i + 1) for i in range(10)]
        self.readout.kept.append(StoredReading(11, "water-2", T0, False, error=ERROR_2))

    def test_overview(self) -> None:
        response, body = self.api("GET", "/api/readout")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"])
        self.assertEqual([m["id"] for m in body["meters"]], ["heat-1", "water-2", "gas-10"])
        heat, water, gas = body["meters"]
        self.assertEqual(heat["values"][0], {"key": "energy", "label": "Energy", "value": 48213.0, "unit": "kWh",
                                             "text": "48\u202f213 kWh"})
        self.assertEqual((heat["interval_seconds"], heat["last_reading_time"], heat["last_reading_age_seconds"],
                          heat["next_due"], heat["alarm"]), (900, T0, 120.0, T0 + 420, False))
        self.assertEqual(heat["meter"]["secondary"], "12345678-KAM-19-04")
        self.assertEqual((water["alarm"], water["alarm_text"], water["failures_in_row"]),
                         (True, f"no answer for 3 reads: {ERROR_2}", 3))
        self.assertEqual((gas["enabled"], gas["last_reading_time"], gas["values"]), (False, None, []))
        self.assertEqual(body["targets"]["push.1"]["backlog"], 12)
        self.assertEqual(body["targets"]["push.1"]["oldest_waiting_age_seconds"], 720.0)
        self.assertEqual(body["targets"]["push.1"]["error"], "connection refused")
        self.assertEqual(body["targets"]["mqtt"]["oldest_waiting"], None)
        self.assertEqual(body["store"]["path"], "/tmp/readings.sqlite")

    def test_one_meter(self) -> None:
        response, body = self.api("GET", "/api/readout/meters/heat-1")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["last_reading"]["id"], 17)
        self.assertEqual(body["last_reading"]["time_utc"], "2024-03-12T14:23:00Z")
        self.assertEqual(body["last_reading"]["records"][1]["quantity"], "Energy")
        response, body = self.api("GET", "/api/readout/meters/nosuch")
        self.assertEqual(response.code, 404)
        self.assertIn("there is no meter nosuch; meters: heat-1, water-2, gas-10", body["error"])

    def test_readings_by_time(self) -> None:
        response, body = self.api("GET", "/api/readout/meters/heat-1/readings?since=2024-03-12T10:00:00Z"
                                         f"&until={T0 - 3600:.0f}")
        self.assertEqual(response.code, 200)
        self.assertEqual([r["id"] for r in body["readings"]], [6, 7, 8, 9])
        self.assertEqual(body["since"], T0 - 4 * 3600 - 23 * 60)
        _, body = self.api("GET", "/api/readout/meters/heat-1/readings?limit=2")
        self.assertEqual([r["id"] for r in body["readings"]], [9, 10], "the newest, oldest first")
        response, body = self.api("GET", "/api/readout/meters/heat-1/readings?since=yesterday")
        self.assertEqual(response.code, 400)
        self.assertIn("since: 'yesterday' is not a time; use ISO 8601", body["error"])
        response, body = self.api("GET", "/api/readout/meters/heat-1/readings?limit=0")
        self.assertEqual(response.code, 400)
        self.assertIn("limit: '0' is not allowed; use a whole number from 1 to 10000", body["error"])
        response, _ = self.api("GET", "/api/readout/meters/nosuch/readings")
        self.assertEqual(response.code, 404)

    def test_export(self) -> None:
        response, body = self.api("GET", "/api/readout/export.csv?meter=heat-1")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        self.assertIn('filename="readings-heat-1.csv"', response.headers.getRawHeaders("content-disposition")[0])
        self.assertEqual(body.splitlines()[0], "id,meter")
        self.assertEqual(len(body.splitlines()), 11)
        response, body = self.api("GET", "/api/readout/export.json")
        self.assertEqual(len(body), 11)
        self.assertEqual({r["meter"] for r in body}, {"heat-1", "water-2"})
        response, _ = self.api("GET", "/api/readout/export.xml")
        self.assertEqual(response.code, 404)
        response, _ = self.api("GET", "/api/readout/export.csv?meter=nosuch")
        self.assertEqual(response.code, 404)
        response, _ = self.api("GET", "/api/readout/export.csv?until=soon")
        self.assertEqual(response.code, 400)

    def test_503_while_the_readouts_do_not_run(self) -> None:
        self.gateway.state.readout = None
        for method, path in (("GET", "/api/readout"), ("GET", "/api/readout/meters/heat-1"),
                             ("GET", "/api/readout/meters/heat-1/readings"), ("GET", "/api/readout/export.csv"),
                             ("POST", "/api/readout/read"), ("POST", "/api/readout/meters/heat-1/read")):
            response, body = self.api(method, path, {} if method == "POST" else None)
            self.assertEqual(response.code, 503, path)
            self.assertIn("the readouts are not running", body["error"])
        response, _ = self.api("GET", "/api/readout/meters.csv")
        self.assertEqual(response.code, 200, "the list is the configuration's: it is there while stopped")


class ReadNowTests(ReadoutWebCase):
    def test_read_one_waits_for_the_reading(self) -> None:
        self.gateway.hold = True
        self.gateway.outcomes["heat-1"] = reading("heat-1", 1, when=T0 + 100, id=51)
        d = self.http.request("POST", "http://127.0.0.1:8080/api/readout/meters/heat-1/read", data=b"{}",
                              headers={b"content-type": [b"application/json"]})
        self.http.flush()
        self.assertNoResult(d)
        self.gateway.release()
        self.http.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = self.settle(response.json())
        self.assertEqual((body["meter"], body["ok"], body["reading"]["id"]), ("heat-1", True, 51))
        self.assertEqual(self.gateway.reads, [["heat-1"]])

    def test_read_one_that_fails(self) -> None:
        self.gateway.outcomes["water-2"] = ERROR_2
        response, body = self.api("POST", "/api/readout/meters/water-2/read", {})
        self.assertEqual(response.code, 502)
        self.assertEqual(body, {"error": ERROR_2, "meter": "water-2"})
        response, body = self.api("POST", "/api/readout/meters/gas-10/read", {})
        self.assertEqual(response.code, 409, "a read that did not run")
        response, body = self.api("POST", "/api/readout/meters/nosuch/read", {})
        self.assertEqual(response.code, 404)
        response, body = self.api("POST", "/api/readout/meters/heat-1/read", b"{}", content_type=b"text/plain")
        self.assertEqual(response.code, 415)
        response, body = self.api("POST", "/api/readout/meters/heat-1/read", {}, headers=CROSS_SITE)
        self.assertEqual(response.code, 403)
        self.assertEqual(len(self.gateway.reads), 2)

    def test_read_all(self) -> None:
        self.gateway.outcomes = {"heat-1": reading("heat-1", 1, id=60), "water-2": ERROR_2}
        response, body = self.api("POST", "/api/readout/read", {})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.gateway.reads, [None])
        self.assertEqual((body["good"], body["failed"]), (1, 2))
        self.assertEqual(body["results"]["heat-1"]["reading"]["id"], 60)
        self.assertEqual(body["results"]["water-2"], {"ok": False, "error": ERROR_2})
        response, body = self.api("POST", "/api/readout/read", {"meters": ["heat-1"]})
        self.assertEqual(list(body["results"]), ["heat-1"])
        response, body = self.api("POST", "/api/readout/read", {"meters": "heat-1"})
        self.assertEqual(response.code, 400)
        response, body = self.api("POST", "/api/readout/read", {"meters": ["nosuch"]})
        self.assertEqual(response.code, 404)


class AdoptTests(ReadoutWebCase):
    def test_adopt_the_last_scan(self) -> None:
        run_clock(self.clock, self.gateway.master.scan_secondary().deferred)
        response, body = self.api("POST", "/api/meters/1/adopt", {"interval": "bad"})
        self.assertEqual(response.code, 400)
        self.assertEqual(body["setting"], "meter.interval")
        response, body = self.api("POST", "/api/meters/1/adopt", {"interval": "30m"})
        self.assertEqual(response.code, 201)
        self.assertEqual(len(body["added"]), 1)
        self.assertEqual(self.gateway.store.config.meters[body["added"][0]].interval, "30m")
        self.assertEqual(body["meters"][:3], ["heat-1", "water-2", "gas-10"])
        response, body = self.api("POST", "/api/meters/1/adopt", {})
        self.assertEqual((response.code, body["added"]), (200, []))
        response, body = self.api("POST", "/api/meters/7/adopt", {})
        self.assertEqual(response.code, 404)


class MeterListTests(ReadoutWebCase):
    def test_csv_round_trip(self) -> None:
        response, text = self.api("GET", "/api/readout/meters.csv")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        saved = self.gateway.store.config.meters
        rows = list(csv.DictReader(io.StringIO(text)))
        self.assertEqual([r["id"] for r in rows], ["heat-1", "water-2", "gas-10"])
        response, body = self.api("DELETE", "/api/readout/meters/water-2")
        self.assertEqual(response.code, 200)
        response, body = self.api("PUT", "/api/readout/meters.csv?mode=replace", text.encode(), content_type=b"text/csv")
        self.assertEqual(response.code, 200)
        self.assertEqual(body["added"], ["water-2"])
        self.assertEqual(self.gateway.store.config.meters, saved)
        response, body = self.api("PUT", "/api/readout/meters.csv", text.encode(), content_type=b"text/csv")
        self.assertEqual((body["added"], body["changed"], body["removed"]), ([], [], []))

    def test_csv_refused(self) -> None:
        before = self.gateway.store.config
        bad = b"id,line,address\nx-1,1,12345678-KAM-19-04\nx-2,9,5\nX 3,1,6\n"
        response, body = self.api("PUT", "/api/readout/meters.csv", bad, content_type=b"text/csv")
        self.assertEqual(response.code, 400)
        self.assertIs(self.gateway.store.config, before)
        self.assertEqual(len(body["errors"]), 2)
        self.assertEqual(sorted(e.split(":")[0] for e in body["errors"]), ["row 3, line", "row 4, id"])
        self.assertIn("row 3, line: 9 is not allowed; use a configured line: 1", body["error"])
        response, body = self.api("PUT", "/api/readout/meters.csv?mode=all", bad, content_type=b"text/csv")
        self.assertEqual(response.code, 400)
        response, body = self.api("PUT", "/api/readout/meters.csv", bad, content_type=b"text/csv", headers=CROSS_SITE)
        self.assertEqual(response.code, 403)

    def test_put_and_delete_a_meter(self) -> None:
        response, body = self.api("PUT", "/api/readout/meters/flat-4", {"line": 1, "address": "30405060-ABB-20-02",
                                                                       "name": "Flat 4", "interval": "30m"})
        self.assertEqual(response.code, 201)
        self.assertEqual(body, {"id": "flat-4", "line": 1, "address": "30405060-ABB-20-02", "name": "Flat 4",
                                "interval": "30m", "enabled": True})
        response, body = self.api("PUT", "/api/readout/meters/flat-4", {"enabled": "off", "interval": ""})
        self.assertEqual(response.code, 200)
        self.assertEqual((body["enabled"], body["interval"], body["name"]), (False, "", "Flat 4"))
        response, body = self.api("GET", "/api/readout/meters/flat-4")
        self.assertEqual(response.code, 200, "listed, not yet scheduled")
        self.assertEqual(body["last_reading"], None)
        response, body = self.api("DELETE", "/api/readout/meters/flat-4")
        self.assertEqual(body["removed"], "flat-4")
        self.assertNotIn("flat-4", self.gateway.store.config.meters)
        response, body = self.api("DELETE", "/api/readout/meters/flat-4")
        self.assertEqual(response.code, 404)

    def test_put_refusals_name_the_setting(self) -> None:
        before = self.gateway.store.config
        cases = [
            ("heat-1", {"interval": "5s"}, "meter.heat-1.interval"),
            ("heat-1", {"line": 4}, "meter.heat-1.line"),
            ("heat-1", {"colour": "red"}, "meter.heat-1.colour"),
            ("new-1", {"line": 1}, "meter.new-1.address"),
            ("new-1", {"address": "999"}, "meter.new-1.address"),
            ("New 1", {"address": "5"}, "meter.New 1"),
        ]
        for key, settings, setting in cases:
            response, body = self.api("PUT", f"/api/readout/meters/{key}", settings)
            self.assertEqual(response.code, 400, (key, settings))
            self.assertEqual(body["setting"], setting, body)
            words = label_of(setting)
            self.assertTrue(words == setting or body["error"].startswith(words + ":"), body["error"])
            self.assertFalse(body["error"].startswith(setting + ":"), "the dotted name is the JSON's setting")
        self.assertIn("use an interval such as 30s, 15m, 1h or 1d", self.api("PUT", "/api/readout/meters/heat-1",
                                                                            {"interval": "5s"})[1]["allowed"])
        response, body = self.api("PUT", "/api/readout/meters/heat-1", [1, 2])
        self.assertEqual(response.code, 400)
        self.assertIs(self.gateway.store.config, before)
