"""
Tests for cmegw.web.pages.readouts (with readout_meter, readout_delivery,
readout_views and charts): the Meter list page, one meter's page with its
charts, the Delivery tab, and the Add to meter list button of the Meters
page; through StubTreq over a fake gateway (`FakeReadout` in `fake_state`)
with real readings decoded from the simulated meters.
"""

from __future__ import annotations

import csv
import html
import io
import re

from cmegw.readout.reading import TARGET_CONNECTED, TARGET_DOWN, StoredReading, TargetStatus
from cmegw.testing import run_clock
from cmegw.web.pages import charts
from cmegw.readout.views import main_registers, registers, status_flags
from cmegw.readout.formats import GROUP
from cmegw.web.pages.readout_views import parse_time
from tests.readout_web_helpers import DECODED, ERROR_2, T0, ReadoutWebCase, reading
from tests.web_helpers import multipart

KWH = f"48{GROUP}213 kWh"
M3 = f"1{GROUP}234.56 m³"


def text_of(page: str) -> str:
    """The page's text, tags dropped, entities decoded, spaces collapsed."""
    return re.sub(r"[ \t\r\n]+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


class ViewTests(ReadoutWebCase):
    def test_registers_as_a_person_reads_a_meter(self) -> None:
        heat = registers(DECODED[1])
        self.assertEqual([(r.label, r.text) for r in heat[:2]], [("Energy", KWH), ("Volume", M3)])
        self.assertTrue(all(r.counter for r in heat[:2]))
        self.assertIn(("Power (maximum)", "25.40 kW"), [(r.label, r.text) for r in heat])
        # The list's main values: the totals alone (a tariff's figure without its label reads as a total).
        self.assertEqual([r.text for r in main_registers(DECODED[5])], [f"5{GROUP}432.10 kWh"])
        self.assertIn(("Energy (tariff 1)", f"4{GROUP}000.00 kWh"), [(r.label, r.text) for r in registers(DECODED[5])])

    def test_status_flags(self) -> None:
        self.assertEqual(status_flags(0), [])
        self.assertEqual(status_flags(0x14), ["power low", "temporary error"])
        self.assertEqual(status_flags(0x02), ["application error"])

    def test_parse_time(self) -> None:
        self.assertEqual(parse_time("since", "1710253380"), T0)
        self.assertEqual(parse_time("since", "2024-03-12T14:23:00Z"), T0)
        self.assertEqual(parse_time("since", "2024-03-12T15:23:00+01:00"), T0)
        self.assertEqual(parse_time("since", "2024-03-12T14:23:00"), T0)
        with self.assertRaisesRegex(ValueError, r"since: 'yesterday' is not a time; use ISO 8601"):
            parse_time("since", "yesterday")


class ChartTests(ReadoutWebCase):
    def test_series_per_register(self) -> None:
        kept = [reading("heat-1", 1, when=T0 - 3600 * i, id=i) for i in range(3, 0, -1)]
        kept.insert(1, StoredReading(99, "heat-1", T0 - 7000, False, error="no answer"))
        series = charts.register_series(kept)
        self.assertEqual(series[0].label, "Energy")
        self.assertEqual(series[0].unit, "kWh")
        self.assertEqual(series[0].points[0], (T0 - 3 * 3600, 48213.0))
        self.assertEqual(len(series[0].points), 3)
        self.assertNotIn("Energy (stored 1, 2023-12-31)", [s.label for s in series], "stored values are no register")


class MeterListPageTests(ReadoutWebCase):
    def test_the_list(self) -> None:
        self.fill()
        response, page = self.get("/readouts")
        self.assertEqual(response.code, 200)
        text = text_of(page)
        self.assertIn("Meter list (3 meters, 1 in alarm)", text)
        self.gateway.store.change(self.gateway.store.config.evolve(
            meters={"heat-1": self.gateway.store.config.meters["heat-1"]}))
        self.assertIn("Meter list (1 meter,", text_of(self.get("/readouts")[1]), "one meter, no plural")
        self.assertIn('href="/readouts/heat-1"', page)
        self.assertIn("Flat 3 heat", text)
        self.assertIn("2024-03-12 14:23:00 2 min ago", text)
        self.assertIn(KWH, text)
        self.assertIn(M3, text)
        self.assertIn("15m", text)
        self.assertIn("1h (default)", text)
        self.assertIn("2024-03-12 14:30:00", text, "next read")
        self.assertIn("off (Read now only)", text)
        self.assertIn("not read yet", text)
        alarm = re.search(r'<span class="badge badge-alarm" role="alert">([^<]*)</span>', page)
        self.assertIsNotNone(alarm)
        self.assertEqual(html.unescape(alarm.group(1)), f"no answer for 3 reads: {ERROR_2}")
        self.assertIn('<span class="badge badge-warn">temporary error</span>', page)
        self.assertIn('<span class="badge badge-warn">power low</span>', page)
        for label in ("Line", "Address", "Read interval", "Read on schedule"):  # the model's labels
            self.assertIn(f">{label}</th>", page)
        self.assertIn('action="/readouts/read"', page)
        self.assertIn('action="/readouts/heat-1/read"', page)
        self.assertIn('action="/readouts/heat-1/remove"', page)
        self.assertIn('href="/readouts/meters.csv"', page)
        self.assertIn('aria-current="page" class="active">Meter list</a>', page)

    def test_without_the_readouts(self) -> None:
        self.gateway.state.readout = None
        response, page = self.get("/readouts")
        self.assertEqual(response.code, 200)
        self.assertIn("The readouts are not running", page)
        self.assertIn("heat-1", page)
        response, page = self.post("/readouts/read", {})
        self.assertEqual(response.code, 503)
        self.assertIn("The readouts are not running: nothing can be read now.", page)

    def test_store_problem_and_delivery(self) -> None:
        self.readout.problem = "the disk holding /var/lib/cmegw/readings.sqlite is full: 12 readings kept in memory"
        self.readout.statuses = {
            "mqtt": TargetStatus("mqtt", TARGET_CONNECTED, last_delivery=T0 + 60, delivered=1234),
            "push.1": TargetStatus("push.1", TARGET_DOWN, "https://head-end.example/readings refused: 401 "
                                                          "Unauthorized (check the password)", delivered=5)}
        self.readout.backlogs = {"mqtt": (0, None), "push.1": (7, T0 - 480)}
        _, page = self.get("/readouts")
        self.assertRegex(page, r'<div class="banner banner-error" role="alert"><strong>Reading store: </strong>'
                               r'the disk holding /var/lib/cmegw/readings.sqlite is full')
        text = text_of(page)
        self.assertIn("mqtt connected — 2024-03-12 14:24:00 (1 min ago) 1" + GROUP + "234 0", text)
        self.assertIn("push.1 down https://head-end.example/readings refused: 401 Unauthorized (check the password)",
                      text)
        self.assertIn("7, oldest 10 min ago", text)
        self.assertIn("/tmp/readings.sqlite", text)

    def test_read_now(self) -> None:
        self.gateway.hold = True
        response, page = self.post("/readouts/heat-1/read", {"back": "/readouts"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.gateway.reads, [["heat-1"]])
        self.assertIn("Reading heat-1 now", page)
        response, page = self.post("/readouts/read", {})
        self.assertEqual(self.gateway.reads[-1], None)
        self.assertIn("Reading every meter of the list now", page)
        self.readout.meters["heat-1"].queued = True
        _, page = self.get("/readouts")
        self.assertIn('id="meter-list" data-live="2"', page, "the list follows the reads by itself")
        self.assertIn("waiting for the line", page)
        self.assertIn('<noscript><meta http-equiv="refresh" content="2" /></noscript>', page,
                      "without script it reloads: a GET, never a form again")
        self.assertEqual(page.count('http-equiv="refresh"'), 1)
        response, page = self.post("/readouts/add", {"add.id": "Flat 4", "add.address": "5"})
        self.assertEqual(response.code, 400)
        self.assertNotIn('http-equiv="refresh"', page, "a refused form's answer never sends it again by itself")
        _, page = self.get("/readouts/heat-1")
        for part in ("identity", "last-reading"):
            self.assertIn(f'id="{part}" data-live="2"', page)
        self.assertIn('<noscript><meta http-equiv="refresh" content="2" /></noscript>', page)
        self.readout.meters["heat-1"].queued = False
        self.gateway.release()
        for path in ("/readouts", "/readouts/heat-1"):
            _, page = self.get(path)
            self.assertNotIn('http-equiv="refresh"', page)
            self.assertIn('data-live="5"', page, "the status stays live, at the usual pace")
        response, _ = self.post("/readouts/nosuch/read", {})
        self.assertEqual(response.code, 404)

    def test_forms_need_the_csrf_token(self) -> None:
        before = self.gateway.store.config
        for path, fields in (("/readouts/heat-1/remove", {}), ("/readouts/add", {"add.id": "x", "add.address": "5"}),
                             ("/readouts/read", {}), ("/readouts/heat-1/settings", {"meter.heat-1.name": "x"}),
                             ("/delivery/mqtt", {"mqtt.url": "mqtt://127.0.0.1"})):
            response, page = self.post(path, fields, token=False)
            self.assertEqual(response.code, 403, path)
            self.assertIn("Nothing was changed", page)
        self.assertIs(self.gateway.store.config, before)
        self.assertEqual(self.gateway.reads, [])

    def test_add_a_meter(self) -> None:
        response, page = self.post("/readouts/add", {"add.id": "flat-4", "add.line": "1",
                                                     "add.address": "30405060-ABB-20-02", "add.name": "Flat 4",
                                                     "add.interval": "30m"})
        self.assertEqual(response.code, 200)
        self.assertIn("Meter flat-4 added", page)
        meter = self.gateway.store.config.meters["flat-4"]
        self.assertEqual((meter.line, meter.address, meter.name, meter.interval, meter.enabled),
                         (1, "30405060-ABB-20-02", "Flat 4", "30m", True))

    def test_add_refuses_bad_values_with_the_models_messages(self) -> None:
        before = self.gateway.store.config
        response, page = self.post("/readouts/add", {"add.id": "Flat 4", "add.line": "3", "add.address": "300",
                                                     "add.name": "", "add.interval": "5s"})
        self.assertEqual(response.code, 400)
        self.assertIs(self.gateway.store.config, before)
        self.assertIn("Nothing was added: correct the 4 fields marked below.", page)
        errors = {m.group(1): html.unescape(m.group(2)) for m in re.finditer(
            r'<p id="f-add-([a-z]+)-error" class="field-error" role="alert">([^<]*)</p>', page)}
        self.assertEqual(set(errors), {"id", "line", "address", "interval"})
        self.assertIn("Meter Flat 4: 'Flat 4' is not allowed; name a meter with 1 to 64 lower-case letters", errors["id"])
        self.assertIn("is not allowed; use a configured line: 1", errors["line"])
        self.assertIn("'300' is not allowed; use a secondary address such as 12345678-KAM-19-04", errors["address"])
        self.assertTrue(errors["address"].startswith("Address of the new meter:"), "no made-up id in the words")
        self.assertNotIn("new-0", page)
        self.assertIn("'5s' is not allowed; use an interval such as 30s, 15m, 1h or 1d (from 10 s to 1 day)",
                      errors["interval"])
        self.assertIn('value="Flat 4"', page, "the form keeps what was typed")
        response, page = self.post("/readouts/add", {"add.id": "heat-1", "add.address": "5"})
        self.assertEqual(response.code, 400)
        self.assertIn("heat-1 is in the list already", page)

    def test_remove(self) -> None:
        response, page = self.post("/readouts/gas-10/remove", {})
        self.assertEqual(response.code, 200)
        self.assertIn("Meter gas-10 removed from the list; its readings stay in the store.", page)
        self.assertEqual(list(self.gateway.store.config.meters), ["heat-1", "water-2"])
        response, _ = self.post("/readouts/gas-10/remove", {})
        self.assertEqual(response.code, 404)

    def test_csv_round_trip(self) -> None:
        response, body = self.get("/readouts/meters.csv")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        self.assertIn('attachment; filename="meters.csv"', response.headers.getRawHeaders("content-disposition")[0])
        rows = list(csv.DictReader(io.StringIO(body)))
        self.assertEqual([r["id"] for r in rows], ["heat-1", "water-2", "gas-10"])
        self.assertEqual(rows[0]["interval"], "15m")
        saved = self.gateway.store.config.meters
        self.post("/readouts/gas-10/remove", {})
        self.post("/readouts/add", {"add.id": "other", "add.address": "7"})
        response, page = self.upload(body.encode(), "replace")
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), "post/redirect/get")
        self.assertIn("meters.csv: added: gas-10; removed: other.", text_of(page))
        self.assertEqual(self.gateway.store.config.meters, saved)

    def test_csv_upload_errors_name_row_and_column(self) -> None:
        before = self.gateway.store.config
        bad = b"id,line,address,interval\nnew-1,1,12345678-KAM-19-04,1h\nnew-2,1,999,1h\nnew-3,1,7,2s\n"
        response, page = self.upload(bad, "merge")
        self.assertEqual(response.code, 400)
        self.assertIs(self.gateway.store.config, before)
        text = text_of(page)
        self.assertIn("Nothing was changed: meters.csv has 2 problem(s).", text)
        self.assertIn("row 3, address: '999' is not allowed", text)
        self.assertIn("row 4, interval: '2s' is not allowed", text)
        response, page = self.upload(b"", "merge")
        self.assertEqual(response.code, 400)
        self.assertIn("Choose a CSV file to upload.", page)

    def upload(self, data: bytes, mode: str) -> tuple[object, str]:
        body, ctype = multipart({"_csrf": self.token(), "mode": mode}, {"file": ("meters.csv", data)})
        return self.request("POST", "/readouts/import", data=body, headers={b"content-type": [ctype]})


class AdoptTests(ReadoutWebCase):
    def test_adopt_a_finished_scan(self) -> None:
        _, page = self.get("/meters")
        self.assertNotIn("Add to meter list", page, "nothing found yet")
        self.assertIn('href="/readouts"', page)
        scan = self.gateway.master.scan_secondary()
        _, page = self.get("/meters")
        self.assertNotIn("Add to meter list", page, "not while the scan runs")
        run_clock(self.clock, scan.deferred)
        _, page = self.get("/meters")
        self.assertIn('action="/readouts/adopt"', page)
        self.assertIn("Add to meter list", page)
        response, page = self.post("/readouts/adopt", {"line": "1"})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), "post/redirect/get")
        added = [k for k in self.gateway.store.config.meters if k not in ("heat-1", "water-2", "gas-10")]
        self.assertEqual(len(added), 1, "three of the four simulated meters are listed already")
        self.assertIn(f"Added 1 meter(s) of line 1 to the list: {added[0]}.", page)
        self.assertEqual(self.gateway.store.config.meters[added[0]].address, "30405060-ABB-20-02")
        _, page = self.post("/readouts/adopt", {"line": "1"})
        self.assertIn("Nothing added: every meter the last scan of line 1 found is in the list already.", page)
        response, _ = self.post("/readouts/adopt", {"line": "2"})
        self.assertEqual(response.code, 404)
        response, page = self.post("/readouts/adopt", {"line": "1", "interval": "1s"})
        self.assertEqual(response.code, 400)
        self.assertIn("is not allowed; use an interval such as 30s", html.unescape(page))


class MeterPageTests(ReadoutWebCase):
    def setUp(self) -> None:
        super().setUp()
        self.fill()
        energy = [48213000 + 1000 * i for i in range(48)]
        self.readout.kept = [reading("heat-1", 1, when=T0 - 3600 * (47 - i), id=i + 1,
                                     records=[dict(r, value=energy[i]) if r["quantity"] == "Energy" and not r["storage"]
                                              else r for r in DECODED[1]["records"]]) for i in range(48)]
        self.readout.kept.insert(40, StoredReading(100, "heat-1", T0 - 3600 * 8 + 60, False, error="no answer"))

    def test_identity_and_last_reading(self) -> None:
        response, page = self.get("/readouts/heat-1")
        self.assertEqual(response.code, 200)
        text = text_of(page)
        self.assertIn("<h1>Meter heat-1</h1>", page)
        for label, value in (("Manufacturer", "Kamstrup (KAM)"), ("Identification", "12345678"), ("Medium", "Heat: Outlet"),
                             ("Version", "25 (0x19)"), ("Secondary address", "12345678-KAM-19-04"),
                             ("Name", "Flat 3 heat"), ("Read every", "15m"), ("Alarm", "no"),
                             ("Meter's status", "ok")):
            self.assertIn(f"{label} {value}", text)
        self.assertIn(f"Energy {KWH} Volume {M3} Flow temperature 68.43 °C", text, "the main registers first")
        self.assertRegex(page, r"<details[^>]*><summary>Every record as decoded \(14\)</summary>")
        self.assertRegex(page, r"<details[^>]*><summary>Other values")
        self.assertIn("Read 2024-03-12 14:23:00 (2 min ago), reading 17 · meter's clock 2024-03-12 14:23:00 "
                      "(in step with the gateway)", text)
        self.assertIn("On time 759 days", text, "durations in days, not seconds")
        self.assertIn('href="/static/readings.css"', page)

    def test_charts(self) -> None:
        _, page = self.get("/readouts/heat-1?range=24h")
        self.assertIn("24 good readings, 1 failed", page)
        svgs = re.findall(r"<svg .*?</svg>", page, re.S)
        self.assertGreaterEqual(len(svgs), 5, "one chart per register")
        energy = re.search(r'<figure class="chart-figure" id="chart-energy">(.*?)</figure>', page, re.S).group(1)
        labels = [html.unescape(t) for t in re.findall(r'class="chart-label"[^>]*>([^<]*)</text>', energy)]
        self.assertIn("kWh", html.unescape(energy))
        self.assertIn(f"48{GROUP}240", labels, "value labels in kWh, digits grouped")
        self.assertIn("18:00", labels, "time labels")
        self.assertIn("<polyline", energy)
        self.assertIn(f"last 48{GROUP}260 kWh", html.unescape(energy))
        self.assertIn('aria-label="Energy in kWh over time"', energy)
        self.assertNotIn("<script", page.replace('<script src="/static/live.js" defer="defer"></script>', ""),
                         "the charts need no script (the page's live updates are the layout's)")
        _, page = self.get("/readouts/heat-1?range=7d")
        self.assertIn("48 good readings, 1 failed", page)
        self.assertIn('href="/readouts/heat-1/readings.csv?range=7d"', page)
        self.assertIn('aria-current="true" class="button small primary">7 d</a>', page)

    def test_export_a_range(self) -> None:
        response, body = self.get("/readouts/heat-1/readings.csv?range=24h")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/csv; charset=utf-8"])
        self.assertIn('filename="readings-heat-1-24h.csv"', response.headers.getRawHeaders("content-disposition")[0])
        self.assertTrue(body.startswith("id,meter\n"))
        response, body = self.get("/readouts/heat-1/readings.json?range=all")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json; charset=utf-8"])
        self.assertIn('"meter": "heat-1"', body)

    def test_settings_form(self) -> None:
        _, page = self.get("/readouts/heat-1")
        for label in ("Line", "Address", "Name", "Read interval", "Read on schedule"):
            self.assertIn(f"{label}</", page)
        self.assertIn('value="Flat 3 heat"', page)
        response, page = self.post("/readouts/heat-1/settings", {
            "_group": "heat-1", "meter.heat-1.line": "1", "meter.heat-1.address": "12345678-KAM-19-04",
            "meter.heat-1.name": "Flat 3", "meter.heat-1.interval": "2s"})
        self.assertEqual(response.code, 400)
        self.assertRegex(html.unescape(page), r'<p id="f-meter-heat-1-interval-error" class="field-error" '
                                              r"role=\"alert\">Read interval of meter heat-1: '2s' is not allowed; use an interval")
        self.assertEqual(self.gateway.store.config.meters["heat-1"].name, "Flat 3 heat")
        response, page = self.post("/readouts/heat-1/settings", {
            "_group": "heat-1", "meter.heat-1.line": "1", "meter.heat-1.address": "12345678-KAM-19-04",
            "meter.heat-1.name": "Flat 3", "meter.heat-1.interval": "1h"})
        self.assertEqual(response.code, 200)
        self.assertIn("Saved.", page)
        meter = self.gateway.store.config.meters["heat-1"]
        self.assertEqual((meter.name, meter.interval, meter.enabled), ("Flat 3", "1h", False))

    def test_read_now_from_its_page(self) -> None:
        self.gateway.outcomes["heat-1"] = reading("heat-1", 1, when=T0 + 100, id=50)
        response, page = self.post("/readouts/heat-1/read", {"back": "/readouts/heat-1"})
        self.assertEqual(response.code, 200)
        self.assertIn("<h1>Meter heat-1</h1>", page)
        self.assertIn("Reading heat-1 now", page)

    def test_unknown_meter(self) -> None:
        response, page = self.get("/readouts/nosuch")
        self.assertEqual(response.code, 404)
        self.assertIn("There is no meter nosuch in the list.", page)
        response, _ = self.get("/readouts/nosuch/readings.csv")
        self.assertEqual(response.code, 404)

    def test_a_meter_in_alarm(self) -> None:
        _, page = self.get("/readouts/water-2")
        self.assertIn(f'<span class="badge badge-alarm" role="alert">no answer for 3 reads: {ERROR_2}</span>', page)
        self.assertIn('<span class="badge badge-warn">power low</span>', page)
        self.assertIn("No reading with a numeric register in this range.", page)


class DeliveryTabTests(ReadoutWebCase):
    def setUp(self) -> None:
        super().setUp()
        config = self.gateway.store.config
        self.gateway.store.change(config.evolve(
            mqtt={"url": "mqtt://127.0.0.1:1883", "username": "gw", "password": "s3cret-pass"},
            push={"1": {"url": "https://head-end.example/readings", "auth": "bearer", "token": "t0ken-xyz"}}))

    def test_no_secret_is_shown(self) -> None:
        response, page = self.get("/delivery")
        self.assertEqual(response.code, 200)
        self.assertNotIn("s3cret-pass", page)
        self.assertNotIn("t0ken-xyz", page)
        self.assertIn('type="password"', page)
        self.assertIn("Saved; type a new one to replace it.", page)
        for label in ("Broker URL", "Base topic", "Home Assistant discovery prefix", "MQTT version", "URL",
                      "Bearer token", "Authentication"):
            self.assertIn(f">{label}", page)
        self.assertIn('value="mqtt://127.0.0.1:1883"', page)

    def mqtt_form(self, **changes: str) -> dict[str, str]:
        fields = {"_group": "mqtt", "mqtt.url": "mqtt://127.0.0.1:1883", "mqtt.base_topic": "cmegw",
                  "mqtt.discovery_prefix": "homeassistant", "mqtt.username": "gw", "mqtt.ca": "",
                  "mqtt.certificate": "", "mqtt.key": "", "mqtt.client_id": "", "mqtt.keepalive": "60",
                  "mqtt.protocol": "3.1.1"}
        fields.update(changes)
        return fields

    def test_mqtt_password_is_write_only(self) -> None:
        response, page = self.post("/delivery/mqtt", self.mqtt_form(**{"mqtt.base_topic": "site", "mqtt.password": ""}))
        self.assertEqual(response.code, 200)
        mqtt = self.gateway.store.config.mqtt
        self.assertEqual((mqtt.base_topic, mqtt.password), ("site", "s3cret-pass"), "empty keeps the password")
        self.assertNotIn("s3cret-pass", page)
        self.post("/delivery/mqtt", self.mqtt_form(**{"mqtt.password": "new-pass"}))
        self.assertEqual(self.gateway.store.config.mqtt.password, "new-pass")
        self.post("/delivery/mqtt", self.mqtt_form(**{"mqtt.password.forget": "on"}))
        self.assertEqual(self.gateway.store.config.mqtt.password, "")

    def test_bad_values_are_refused_next_to_the_field(self) -> None:
        before = self.gateway.store.config
        response, page = self.post("/delivery/mqtt", self.mqtt_form(**{"mqtt.url": "http://broker",
                                                                      "mqtt.base_topic": "a/#",
                                                                      "mqtt.password": "typed-secret"}))
        self.assertEqual(response.code, 400)
        self.assertIs(self.gateway.store.config, before)
        self.assertIn("<h1>Delivery</h1>", page)
        self.assertIn('aria-current="page" class="active">Delivery</a>', page)
        page = html.unescape(page)
        self.assertIn("Broker URL: 'http://broker' is not allowed; use mqtt://broker.example:1883", page)
        self.assertIn("Base topic: 'a/#' is not allowed; use topic levels separated by /", page)
        self.assertNotIn("typed-secret", page)
        self.assertNotIn("s3cret-pass", page)

    def test_push_targets(self) -> None:
        response, page = self.post("/delivery/push/add", {"push.new.url": "ftp://x"})
        self.assertEqual(response.code, 400)
        self.assertIn("URL of HTTP target 2: 'ftp://x' is not allowed; the URL must start with http:// or https://", html.unescape(page))
        response, page = self.post("/delivery/push/add", {"push.new.url": "http://127.0.0.1:8000/in"})
        self.assertEqual(response.code, 200)
        self.assertIn("HTTP target 2 added", page)
        self.assertEqual(self.gateway.store.config.push[2].url, "http://127.0.0.1:8000/in")
        response, page = self.post("/delivery/push", {
            "_group": "1", "push.1.url": "https://head-end.example/v2", "push.1.enabled": "on", "push.1.format": "csv",
            "push.1.auth": "bearer", "push.1.username": "", "push.1.ca": "", "push.1.timeout": "2.5"})
        self.assertEqual(response.code, 200, page)
        push = self.gateway.store.config.push[1]
        self.assertEqual((push.url, push.format, push.timeout, push.token), ("https://head-end.example/v2", "csv",
                                                                            2.5, "t0ken-xyz"))
        self.assertNotIn("t0ken-xyz", page)
        response, page = self.post("/delivery/push/remove", {"_group": "2"})
        self.assertEqual(response.code, 200)
        self.assertEqual(list(self.gateway.store.config.push), [1])
        response, _ = self.post("/delivery/push/remove", {"_group": "5"})
        self.assertEqual(response.code, 404)
