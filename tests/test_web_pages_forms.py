"""
Tests for `cmegw.web.pages.forms`: the CSRF token of every form, and
post/redirect/get (a form that succeeded sends the browser to a page).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import attrs

from treq.testing import StubTreq
from twisted.internet import defer, task

from cmegw.config.readout import push_table
from cmegw.config.store import factory_defaults
from cmegw.host.apply import HostNetworkResult
from cmegw.readout.scheduler import MeterStatus
from cmegw.web.app import admin_resource, build_app
from cmegw.web.pages.admin import Admin
from cmegw.web.pages.forms import LIVE_HEADER, Flash
from cmegw.web.pages.widgets import Notice
from tests.readout_web_helpers import Gateway, ReadoutWebCase
from tests.web_helpers import BASE, HOST, FakeWeb, PagesTestBase


class CsrfTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_without_token(self) -> None:
        yield self.get("/status")
        response, body = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                         token="")
        self.assertEqual(response.code, 403)
        self.assertIn("Nothing was changed", body)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_wrong_token(self) -> None:
        yield self.get("/status")
        response, _ = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                      token="00" * 32)
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_token_of_another_session(self) -> None:
        """A token is worth nothing without its session cookie (a fresh client has another)."""
        token = yield self.token()
        other = StubTreq(self.resource)
        yield other.get(BASE + "/status")
        response = yield other.post(BASE + "/serial/configuration",
                                    data=urlencode({"_group": "1", "line.1.baud_rate": "300", "_csrf": token}).encode(),
                                    headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.lines[1].baud_rate, 2400)

    @defer.inlineCallbacks
    def test_cross_site_origin(self) -> None:
        token = yield self.token()
        response, _ = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                      token=token, headers={b"origin": [b"http://evil.example"]})
        self.assertEqual(response.code, 403)
        response, _ = yield self.post("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"},
                                      token=token, headers={b"origin": [b"http://127.0.0.1:8080"]})
        self.assertEqual(response.code, 200)

    @defer.inlineCallbacks
    def test_every_form_needs_the_token(self) -> None:
        """Every POST route of the pages (the JSON API has its own guard) refuses a request without the token."""
        app = build_app(Admin(self.gateway, clock=self.clock, host_network=lambda: HOST, web=lambda: self.web))
        forms = sorted(re.sub(r"<[^>]+>", "1", rule.rule) for rule in app.url_map.iter_rules()
                       if "POST" in rule.methods and not rule.rule.startswith("/api"))
        self.assertIn("/system/restart", forms)
        config = self.store.config
        yield self.get("/status")
        for path in forms:
            response, body = yield self.post(path, {"_group": "1", "line": "1", "confirm": "on"}, token="00" * 32)
            self.assertEqual(response.code, 403, path)
            self.assertIn("Nothing was changed", body, path)
        self.assertIs(self.store.config, config)
        self.assertEqual(self.clock.getDelayedCalls(), [], "no restart was scheduled")
        self.assertEqual(len(self.web.access_log.entries), 1, "the log was not cleared")

    @defer.inlineCallbacks
    def test_session_cookie_flags(self) -> None:
        response, _ = yield self.get("/status")
        cookie = response.headers.getRawHeaders(b"set-cookie")[0].lower()
        self.assertIn(b"httponly", cookie)
        self.assertIn(b"samesite=strict", cookie)


class PostRedirectGetTests(PagesTestBase):
    @defer.inlineCallbacks
    def send(self, path: str, fields: dict[str, str]) -> Any:
        """POST a form without following the answer's redirect."""
        token = yield self.token()
        response = yield self.http.post(BASE + path, data=urlencode({**fields, "_csrf": token}).encode(),
                                        headers={b"content-type": [b"application/x-www-form-urlencoded"]},
                                        allow_redirects=False)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def test_saved_form_redirects_to_its_page(self) -> None:
        response, _ = yield self.send("/serial/configuration", {"_group": "1", "line.1.baud_rate": "300"})
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/serial/configuration#line-1"])
        self.assertEqual(self.store.config.lines[1].baud_rate, 300)
        live, body = yield self.get("/serial/configuration", headers={LIVE_HEADER: [b"1"]})
        self.assertNotIn("Applied at once", body, "a live update does not take the notice")
        _, body = yield self.get("/serial/configuration")
        self.assertIn("Applied at once", body)
        _, body = yield self.get("/serial/configuration")
        self.assertNotIn("Applied at once", body, "a reload shows the page, not the notice again")

    @defer.inlineCallbacks
    def test_wrong_value_stays_in_its_field(self) -> None:
        response, body = yield self.send("/serial/configuration", {"_group": "1", "line.1.baud_rate": "1234"})
        self.assertEqual(response.code, 400)
        self.assertIn("1234 is not allowed", body)
        self.assertIsNone(response.headers.getRawHeaders(b"location"))

    @defer.inlineCallbacks
    def test_each_kind_of_form_redirects(self) -> None:
        """Actions and uploads redirect too, to the page that shows their result."""
        for path, fields, target in (
                ("/http/log/clear", {}, b"/http"),
                ("/http/log/clear", {"back": "/http/log"}, b"/http/log"),
                ("/http/authentication/user", {"uri": "/", "name": "bob", "password": "pw", "confirm": "pw"},
                 b"/http/authentication"),
                ("/tcpip/disconnect", {"_group": "1", "tunnel.1.disconnect_timeout": "30"},
                 b"/tcpip/disconnect#tunnel-1"),
                ("/system/restart", {}, b"/system/restarting?kind=restart&boot=")):
            response, _ = yield self.send(path, fields)
            self.assertEqual(response.code, 303, path)
            self.assertTrue(response.headers.getRawHeaders(b"location")[0].startswith(target), path)
        _, body = yield self.get("/http/authentication")
        self.assertIn("User bob of / saved.", body)

    @defer.inlineCallbacks
    def test_bookmark_of_a_form_address_goes_to_its_page(self) -> None:
        for path, page in (("/meters/scan", b"/meters"), ("/http/log/clear", b"/http/log"),
                           ("/readouts/add", b"/readouts"), ("/readouts/read", b"/readouts"),
                           ("/system/restart", b"/system"), ("/tcpip/accept", None)):
            response = yield self.http.get(BASE + path, allow_redirects=False)
            if page is None:
                self.assertEqual(response.code, 200, path)
                continue
            self.assertEqual((response.code, response.headers.getRawHeaders(b"location")), (303, [page]), path)
        response = yield self.http.get(BASE + "/api/meters/1/read", allow_redirects=False)
        self.assertEqual(response.code, 405, "the API says what it says")

    def test_flash_is_bounded(self) -> None:
        flash = Flash(limit=3)
        for n in range(5):
            flash.put(f"session{n}", "/status", Notice("ok", str(n)))
        self.assertEqual(len(flash), 3)
        self.assertIsNone(flash.take("session0", "/status"), "the oldest went first")
        self.assertEqual(flash.take("session4", "/status"), Notice("ok", "4"))
        self.assertIsNone(flash.take("session4", "/status"), "read once")
        self.assertIsNone(flash.take("session3", "/other"), "for its page only")


class _Forms(HTMLParser):
    """The POST forms of a page: action, enctype and the fields as a browser would send them, drawn values kept."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str]]] = []
        self.links: list[str] = []
        self._open: dict[str, str] | None = None
        self._select = ""

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attributes}
        if tag == "a" and a.get("href", "").startswith("/") and "download" not in a:
            self.links.append(a["href"].split("#")[0])
        elif tag == "form" and a.get("method", "").lower() == "post":
            self._open = {}
            self.forms.append((a.get("action", ""), a.get("enctype", ""), self._open))
        elif self._open is None or "name" not in a and tag != "option":
            return
        elif tag == "button" or tag == "input" and a.get("type") == "submit":
            self._open.setdefault(a["name"], a.get("value", ""))  # the first button is the one clicked
        elif tag == "input" and a.get("type") not in ("checkbox", "radio", "file"):
            self._open[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("type") in ("checkbox", "radio") and "checked" in a:
            self._open[a["name"]] = a.get("value", "on")
        elif tag == "textarea":
            self._open[a["name"]] = ""
        elif tag == "select":
            self._select = a["name"]
            self._open.setdefault(self._select, "")
        elif tag == "option" and self._select and ("selected" in a or not self._open[self._select]):
            self._open[self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None
        elif tag == "select":
            self._select = ""


#: What a user types into the empty fields a form needs (the drawn values stay as drawn).
TYPED = {"uri": "/extra", "realm": "extra", "name": "bob", "password": "a-good-password", "confirm": "a-good-password",
         "add.id": "flat-9", "add.address": "9", "address": "5", "push.new.url": "http://127.0.0.1:8000/in"}
#: Forms a browser can send only with a file: each proven to redirect in its page's tests.
FILE_FORMS = {"/http/certificate": "test_web_pages_http", "/system/configuration": "test_web_pages_backup",
              "/system/update": "test_web_pages_system", "/tcpip/tls": "test_web_pages_tunnel_tls",
              "/readouts/import": "test_web_pages_readouts"}
#: The forms a walk does not reach, by route: where they are proven to redirect.
PROVEN_ELSEWHERE = {"readouts_adopt": "test_web_pages_readouts (drawn once a scan has found meters not in the list)"}


class FormsGateway(Gateway):
    """The readout pages' fake gateway with the actions the other forms call, each recorded."""

    def __init__(self, clock: task.Clock, config: Any) -> None:
        super().__init__(clock, config)
        self.calls: list[tuple[Any, ...]] = []
        self.store.subscribe(self._changed)

    def _changed(self, old: Any, new: Any) -> None:
        """The meter list in force at once, as the readouts apply it."""
        meters = self.readout.meters
        for key in set(meters) - set(new.meters):
            del meters[key]
        for key, meter in new.meters.items():
            meters.setdefault(key, MeterStatus(key, meter, 3600))

    def start_scan(self, n: int, kind: str, identify: bool = True, **options: Any) -> Any:
        return (self.master.scan_primary if kind == "primary" else self.master.scan_secondary)(identify=identify)

    def read_meter(self, n: int, address: Any) -> defer.Deferred:
        return self.master.read(address)

    def set_trace(self, n: int, on: bool) -> None:
        self.calls.append(("set_trace", n, on))

    def renew_dhcp(self, network: Any) -> defer.Deferred:
        self.calls.append(("renew_dhcp",))
        return defer.succeed(HostNetworkResult("renew", True, "The DHCP lease was renewed."))

    def restart(self) -> defer.Deferred:
        self.calls.append(("restart",))
        return defer.succeed(None)

    def factory_reset(self) -> defer.Deferred:
        self.calls.append(("factory_reset",))
        return defer.succeed(None)


class EveryFormRedirectsTests(ReadoutWebCase):
    bus_step = 0.05  # the bus runs on the test's clock: a read takes some seconds of bus time
    def setUp(self) -> None:
        super().setUp()
        config = factory_defaults()
        config = config.evolve(meters=self.gateway.store.config.meters,
                               push=push_table({"1": {"url": "http://127.0.0.1:8000/in"}}),
                               network=attrs.evolve(config.network, apply_to_host=True, dhcp=True))
        self.gateway = FormsGateway(self.clock, config)
        self.readout = self.gateway.readout
        self.http = StubTreq(admin_resource(self.gateway, clock=self.clock, host_network=lambda: HOST,
                                            web=FakeWeb))

    def send(self, path: str, action: str, enctype: str, fields: dict[str, str]) -> str:
        """Send one form as a user fills it: 303 expected; the page it redirects to."""
        if "multipart" in enctype:
            self.assertIn(action, FILE_FORMS)
            return ""
        data = {k: v or TYPED.get(k, TYPED.get(k.rsplit(".", 1)[-1], "")) for k, v in fields.items()}
        if action == "/system/factory-defaults":
            data["confirm"] = "on"
        response, answer = self.request("POST", action, data=urlencode(data).encode(), allow_redirects=False,
                                        headers={b"content-type": [b"application/x-www-form-urlencoded"]})
        self.assertEqual(response.code, 303, f"{action} from {path} with {data}: {answer[:3000]}")
        return response.headers.getRawHeaders(b"location")[0].decode().split("#")[0]

    def test_every_form_sent_as_a_user_fills_it_redirects(self) -> None:
        """
        Every POST form of every page (the pages a user reaches by links and by
        the redirects), sent with the values it shows and the empty fields it
        needs typed, answers 303 (post/redirect/get); the forms that remove or
        restart go last; the file forms are proven in their pages' tests.
        """
        seen: set[str] = set()
        sent: set[tuple[str, ...]] = set()
        last: list[tuple[str, str, str, dict[str, str]]] = []
        todo, visits = ["/status"], 0
        while todo and visits < 150:
            path = todo.pop(0)
            if path in seen or path.startswith(("/api", "/static", "/signout")) or "." in path.rsplit("/", 1)[-1]:
                continue
            seen.add(path)
            visits += 1
            _, body = self.get(path)
            parsed = _Forms()
            parsed.feed(body)
            todo.extend(parsed.links)
            for action, enctype, fields in parsed.forms:
                key = (action, *(fields.get(k, "") for k in ("_group", "action", "uri", "name")))
                if key in sent:
                    continue
                sent.add(key)
                if action.endswith(("/remove", "/delete")) or action.startswith("/system/"):
                    if action not in {form[1] for form in last}:  # one of each: the last user stays
                        last.append((path, action, enctype, fields))
                    continue
                target = self.send(path, action, enctype, fields)
                if target:
                    seen.discard(target)
                    todo.insert(0, target)
        for form in last:
            self.send(*form)
        routes = build_app(Admin(self.gateway, clock=self.clock, host_network=lambda: HOST, web=FakeWeb)).url_map
        match = routes.bind("127.0.0.1").match
        sent_to = {match(key[0], "POST")[0] for key in sent} | {match(path, "POST")[0] for path in FILE_FORMS}
        every = {rule.endpoint for rule in routes.iter_rules() if "POST" in rule.methods
                 and not rule.rule.startswith("/api")}
        self.assertEqual(every - sent_to, set(PROVEN_ELSEWHERE), "every form was found on a page and sent")

    def test_every_form_address_opened_is_a_page(self) -> None:
        """A bookmark or reload of any form's address shows a page or goes to one: never 404 or 405."""
        routes = build_app(Admin(self.gateway, clock=self.clock, host_network=lambda: HOST, web=FakeWeb)).url_map
        for rule in routes.iter_rules():
            if "POST" not in rule.methods or rule.rule.startswith("/api"):
                continue
            path = rule.rule.replace("<string:key>", "heat-1").replace("<int:n>", "1")
            response, _ = self.request("GET", path, allow_redirects=False)
            self.assertIn(response.code, (200, 303), path)
