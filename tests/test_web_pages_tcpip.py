"""
Tests for `cmegw.web.pages.tcpip`: the M-Bus TCP/IP forms of the tunnels.
"""

from __future__ import annotations

import attrs
from twisted.internet import defer

from cmegw.config.settings import describe
from tests.web_helpers import PagesTestBase


class TunnelFormTests(PagesTestBase):
    @defer.inlineCallbacks
    def test_keepalive(self) -> None:
        form = {"_group": "1", "tunnel.1.enabled": "on", "tunnel.1.listen": "tcp:10001",
                "tunnel.1.keepalive": "abc", "tunnel.1.on_busy": "refuse"}
        response, body = yield self.post("/tcpip/accept", form)
        self.assertEqual(response.code, 400)
        self.assertIn("TCP keep-alive of tunnel 1: &#x27;abc&#x27; is not allowed; use a whole number", body.replace("'", "&#x27;"))
        self.assertIn('value="abc"', body)
        form["tunnel.1.keepalive"] = "60"
        response, body = yield self.post("/tcpip/accept", form)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.tunnels[1].keepalive, 60)
        self.assertEqual(self.gateway.running_config.tunnels[1].keepalive, 60)
        self.assertIn("Applied at once", body)
        # The command line's endpoint stays in force and the page says so.
        self.assertIn("in force now: ", body)

    @defer.inlineCallbacks
    def test_disconnect_timeout(self) -> None:
        _, body = yield self.get("/tcpip/disconnect")
        info = describe("tunnel.1.disconnect_timeout")
        self.assertIn(f'<label for="f-tunnel-1-disconnect-timeout">{info.label}</label>', body,
                      "the label is the model's")
        self.assertIn(f'<span class="unit">{info.unit}</span>', body)
        response, body = yield self.post("/tcpip/disconnect", {"_group": "1", "tunnel.1.disconnect_timeout": "-1"})
        self.assertEqual(response.code, 400)
        self.assertIn("use a whole number from 0 to 86400", body)
        response, body = yield self.post("/tcpip/disconnect", {"_group": "1", "tunnel.1.disconnect_timeout": "30"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.tunnels[1].disconnect_timeout, 30)

    @defer.inlineCallbacks
    def test_connection_times(self) -> None:
        stats = self.gateway.state.tunnel_stats[1]
        stats.accept_time_closed = 77.0
        stats.connect_times[0] = 90061.0
        _, body = yield self.get("/tcpip")
        self.assertIn("0 days 00:01:17", body)
        self.assertNotIn("Connect 1 connection time", body, "connect mode is off: no connect-mode timers")
        self.store.change(self.store.config.evolve(tunnels={1: attrs.evolve(
            self.store.config.tunnels[1], connect_mode="always",
            connect_hosts=("tcp:host=a.example:port=1", "tcp:host=b.example:port=2"))}))
        self.gateway.running_config = self.store.config
        _, body = yield self.get("/tcpip")
        self.assertIn("1 days 01:01:01", body)
        self.assertIn("Connect 2 connection time", body, "one row per head-end")
        self.assertNotIn("Connect 3 connection time", body)
