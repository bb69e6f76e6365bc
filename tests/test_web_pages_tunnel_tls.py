"""
Tests for cmegw.web.pages.tunnel_tls: a tunnel's TLS files uploaded on the
M-Bus TCP/IP page and through the API, checked, stored and put in force.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer

from cmegw.web.http import UPLOAD_PATHS
from cmegw.web.pages.tunnel_tls import API_PATH, PAGE_PATH
from tests.test_tunnel_tls import DAY, NOW, Authority, key_pem, pem
from tests.web_helpers import PagesTestBase


def expired_ca(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - 60 * DAY).not_valid_after(NOW - DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def mode(path: str) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


class TunnelTlsBase(PagesTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = Authority("Utility CA")
        self.folder = self.store.path.parent.resolve()

    def uploaded(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("cmegw-tunnel-*"))


class TunnelTlsUploadTests(TunnelTlsBase):
    """The page and the API over a fake gateway."""

    @defer.inlineCallbacks
    def test_page_shows_a_form_per_tunnel(self) -> Any:
        response, body = yield self.get(PAGE_PATH)
        self.assertEqual(response.code, 200)
        self.assertIn('enctype="multipart/form-data"', body)
        self.assertIn('name="tunnel.1.connect_tls_ca"', body)
        self.assertIn('name="tunnel.1.tls_client_ca"', body)
        self.assertIn("none (the system&#x27;s trust store)", body.replace("'", "&#x27;"))
        self.assertIn(">TLS files<", body)

    @defer.inlineCallbacks
    def test_ca_bundle_upload_on_the_page(self) -> Any:
        response, body = yield self.post_multipart(PAGE_PATH, {"_group": "1"},
                                                   {"tunnel.1.connect_tls_ca": ("ca.der", b"\x30\x82 not PEM")})
        self.assertEqual(response.code, 400)
        self.assertIn("the file is not PEM", body)
        self.assertEqual((self.store.config.tunnels[1].connect_tls_ca, self.uploaded()), ("", []))
        response, body = yield self.post_multipart(PAGE_PATH, {"_group": "1"},
                                                   {"tunnel.1.connect_tls_ca": ("ca.pem", pem(self.ca.certificate))})
        self.assertEqual((response.previousResponse.code, response.code), (303, 200), body)
        self.assertIn("Trusted CA bundle (connect mode) stored and in use", body)
        path = self.store.config.tunnels[1].connect_tls_ca
        self.assertEqual(Path(path).parent, self.folder)
        self.assertEqual(Path(path).read_bytes(), pem(self.ca.certificate))
        self.assertEqual(mode(path), 0o600)
        self.assertEqual(self.gateway.running_config.tunnels[1].connect_tls_ca, path, "in force at once")
        self.assertIn("Utility CA (until", body)
        # Another bundle replaces it; the first file goes.
        other = Authority("Other CA")
        response, _ = yield self.post_multipart(PAGE_PATH, {"_group": "1"},
                                                {"tunnel.1.connect_tls_ca": ("ca.pem", pem(other.certificate))})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.uploaded(), [Path(self.store.config.tunnels[1].connect_tls_ca).name])

    @defer.inlineCallbacks
    def test_page_needs_the_csrf_token(self) -> Any:
        from tests.web_helpers import multipart

        body, ctype = multipart({"_group": "1"}, {"tunnel.1.connect_tls_ca": ("ca.pem", pem(self.ca.certificate))})
        response = yield self.http.post("http://127.0.0.1:8080" + PAGE_PATH, data=body,
                                        headers={b"content-type": [ctype]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.tunnels[1].connect_tls_ca, "")

    @defer.inlineCallbacks
    def test_client_certificate_and_key(self) -> Any:
        key, certificate = self.ca.issue(["gateway"], client=True)
        other_key, _ = self.ca.issue(["someone else"], client=True)
        response, body = yield self.post_multipart(PAGE_PATH, {"_group": "1"}, {
            "tunnel.1.connect_tls_certificate": ("gw.pem", pem(certificate))})
        self.assertEqual(response.code, 400)
        self.assertIn("upload the client certificate and its key together", body)
        response, body = yield self.post_multipart(PAGE_PATH, {"_group": "1"}, {
            "tunnel.1.connect_tls_certificate": ("gw.pem", pem(certificate)),
            "tunnel.1.connect_tls_key": ("gw.key", key_pem(other_key))})
        self.assertEqual(response.code, 400)
        self.assertIn("the private key does not belong to the certificate", body)
        self.assertEqual(self.uploaded(), [])
        response, body = yield self.post_multipart(PAGE_PATH, {"_group": "1"}, {
            "tunnel.1.connect_tls_certificate": ("gw.pem", pem(certificate)),
            "tunnel.1.connect_tls_key": ("gw.key", key_pem(key))})
        self.assertEqual(response.code, 200, body)
        tunnel = self.store.config.tunnels[1]
        self.assertEqual(Path(tunnel.connect_tls_key).read_bytes(), key_pem(key))
        self.assertEqual(mode(tunnel.connect_tls_key), 0o600)
        self.assertTrue(tunnel.connect_tls_key.endswith(".key"))
        self.assertEqual(Path(tunnel.connect_tls_certificate).read_bytes(), pem(certificate))
        self.assertEqual(self.gateway.running_config.tunnels[1].connect_tls_certificate, tunnel.connect_tls_certificate)

    @defer.inlineCallbacks
    def test_api_refuses_other_content_types_and_sites(self) -> Any:
        response, _ = yield self.api("POST", API_PATH, b"x", content_type=b"text/plain")
        self.assertEqual(response.code, 415)
        response, _ = yield self.api("PUT", API_PATH, {"tunnel.1.tls_client_ca": pem(self.ca.certificate).decode()},
                                     headers={b"origin": [b"http://evil.example"]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.store.config.tunnels[1].tls_client_ca, "")

    def test_upload_paths_have_the_upload_limit(self) -> None:
        self.assertIn(PAGE_PATH.encode(), UPLOAD_PATHS)
        self.assertIn(API_PATH.encode(), UPLOAD_PATHS)


class TunnelTlsThroughTheGatewayTests(TunnelTlsBase):
    """The API upload on a running gateway: the running tunnel takes the file."""

    real_gateway = True

    @defer.inlineCallbacks
    def test_api_upload(self) -> Any:
        response, body = yield self.api("PUT", API_PATH, {"tunnel.1.tls_client_ca": "-----BEGIN nothing"})
        self.assertEqual(response.code, 400)
        self.assertEqual(body["setting"], "tunnel.1.tls_client_ca")
        self.assertIn("the file is not PEM", body["error"])
        response, body = yield self.api("PUT", API_PATH, {
            "tunnel.1.tls_client_ca": (pem(self.ca.certificate) + pem(expired_ca("Old CA"))).decode()})
        self.assertEqual(response.code, 400)
        self.assertIn("the certificate of Old CA expired on", body["error"])
        key, certificate = self.ca.issue(["gateway"], client=True, not_before=NOW - 30 * DAY,
                                         not_after=NOW - DAY)
        response, body = yield self.api("PUT", API_PATH, {"tunnel.1.connect_tls_certificate": pem(certificate).decode(),
                                                          "tunnel.1.connect_tls_key": key_pem(key).decode()})
        self.assertEqual(response.code, 400)
        self.assertIn("the certificate expired on", body["error"])
        self.assertEqual(body["setting"], "tunnel.1.connect_tls_certificate")
        response, body = yield self.api("PUT", API_PATH, {"tunnel.9.tls_client_ca": pem(self.ca.certificate).decode()})
        self.assertEqual(response.code, 400)
        self.assertIn("use the number of a configured tunnel", body["error"])
        self.assertEqual(self.uploaded(), [])
        response, body = yield self.api("PUT", API_PATH, {"tunnel.1.tls_client_ca": pem(self.ca.certificate).decode()})
        self.assertEqual(response.code, 200, body)
        path = body["changed"]["tunnel.1.tls_client_ca"]
        self.assertEqual(self.store.config.tunnels[1].tls_client_ca, path)
        self.assertEqual(self.gateway.tunnels[1].config.tls_client_ca, path, "the running tunnel has it")
        self.assertEqual(mode(path), 0o600)
        self.assertIn("Utility CA", body["tunnels"]["1"]["tls_client_ca"]["holds"])
        _, body = yield self.api("GET", API_PATH)
        self.assertEqual(body["tunnels"]["1"]["tls_client_ca"]["path"], path)
