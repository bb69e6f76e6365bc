"""
Tests for `cmegw.web.pages.network`: the Network page's forms.
"""

from __future__ import annotations

from twisted.internet import defer

from tests.web_helpers import PagesTestBase


class NetworkFormTests(PagesTestBase):
    FORM = {"_group": "interface", "network.dhcp": "on", "network.ip_address": "", "network.gateway": "",
            "network.hostname": "", "network.domain": "", "network.dhcp_client_id": "",
            "network.primary_dns": "", "network.secondary_dns": "", "network.interface": "",
            "network.backend": "networkd"}

    @defer.inlineCallbacks
    def test_hostname_rule_inline_and_typed_values_kept(self) -> None:
        form = dict(self.FORM, **{"network.hostname": "1gateway", "network.domain": "plant.example"})
        response, body = yield self.post("/network/interface", form)
        self.assertEqual(response.code, 400)
        self.assertIn("start with a letter, continue with letters, digits or hyphens", body)
        self.assertIn('value="1gateway"', body)
        self.assertIn('value="plant.example"', body)
        self.assertEqual(self.store.config.network.hostname, "")
        self.assertEqual(self.store.config.network.domain, "")

    @defer.inlineCallbacks
    def test_address_forms(self) -> None:
        """Alone (class mask), CIDR, or with an explicit mask; each waits for a restart."""
        for typed, address, mask in (("192.168.1.1/24", "192.168.1.1", "255.255.255.0"),
                                     ("10.1.2.3", "10.1.2.3", "255.0.0.0"),
                                     ("172.16.0.9 255.255.0.0", "172.16.0.9", "255.255.0.0"),
                                     ("192.168.7.7", "192.168.7.7", "255.255.255.0")):
            form = dict(self.FORM, **{"network.ip_address": typed})
            del form["network.dhcp"]
            response, body = yield self.post("/network/interface", form)
            self.assertEqual(response.code, 200, body)
            self.assertEqual((self.store.config.network.ip_address, self.store.config.network.netmask),
                             (address, mask), typed)
            self.assertIn(f'value="{address} {mask}"', body)
        self.assertIn("After a restart: ", body)
        self.assertIn("Saved changes wait for a restart", body)
        self.assertFalse(self.store.config.network.dhcp)
        self.assertTrue(self.gateway.running_config.network.dhcp)
        _, status = yield self.get("/network")
        self.assertIn("192.168.7.7", status)

    @defer.inlineCallbacks
    def test_every_wrong_field_is_marked(self) -> None:
        form = dict(self.FORM, **{"network.hostname": "9bad-", "network.ip_address": "10.0.0.1/33"})
        response, body = yield self.post("/network/interface", form)
        self.assertEqual(response.code, 400)
        self.assertEqual(body.count('class="field-error"'), 2)
        self.assertIn("Host name: &#x27;9bad-&#x27; is not allowed", body.replace("'", "&#x27;"))
        self.assertIn("IP address: &#x27;10.0.0.1/33&#x27; is not allowed", body.replace("'", "&#x27;"))

    @defer.inlineCallbacks
    def test_bad_address(self) -> None:
        response, body = yield self.post("/network/interface", dict(self.FORM, **{"network.ip_address": "1.2.3"}))
        self.assertEqual(response.code, 400)
        self.assertIn("in CIDR form", body)
        self.assertIn('value="1.2.3"', body)

    @defer.inlineCallbacks
    def test_dhcp_ignores_static_values(self) -> None:
        yield self.post("/network/interface", dict(self.FORM, **{"network.ip_address": "192.168.1.1/24"}))
        _, body = yield self.get("/network")
        self.assertIn("(ignored: DHCP/BOOTP on)", body)

    @defer.inlineCallbacks
    def test_link(self) -> None:
        response, body = yield self.post("/network/link", {"_group": "link", "network.link_speed": "100",
                                                           "network.link_duplex": "full"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.store.config.network.link_speed, "100")
        self.assertIn("After a restart: ", body)
        response, body = yield self.post("/network/link", {"_group": "link", "network.link_speed": "1000",
                                                           "network.link_duplex": "full"})
        self.assertEqual(response.code, 400)
        self.assertIn("network.link_speed", body)
