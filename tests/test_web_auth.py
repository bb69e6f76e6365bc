"""
Tests for `cmegw.web.auth`: the directive hierarchy, every AuthType, our
RFC 7616 Digest and its edge cases, driven through the real `GatewaySite`
on a `StringTransport` with a `Clock`.
"""

from __future__ import annotations

import base64
from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from cmegw.config.model import AuthDirective, Config, ConfigError, User
from cmegw.web.auth import (
    NC_WINDOW,
    NONCE_LIFETIME,
    AuthGate,
    NonceStore,
    factory_password_in_use,
    make_user,
    parse_auth_params,
    request_path,
)
from tests.web_helpers import ADMIN, Placeholder, Response, connect, digest_header, make_site, parse_responses

BOB = User.with_password("bob", "basic", "s3cret")
CAROL = User.with_password("carol", "ssl", "pw")

DIRECTIVES = (
    AuthDirective("/", "config", "Digest", (ADMIN,)),
    AuthDirective("/public", "config", "None"),
    AuthDirective("/basic", "basic", "Basic", (BOB,)),
    AuthDirective("/ssl", "ssl", "SSL"),
    AuthDirective("/ssl/basic", "ssl", "SSL/Basic", (CAROL,)),
    AuthDirective("/ssl/digest", "ssl", "SSL/Digest", (CAROL,)),
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class GateCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.directives: tuple[AuthDirective, ...] = DIRECTIVES
        self.https_port: int | None = 8443
        self.gate = AuthGate(Placeholder(), lambda: self.directives, lambda: self.https_port, clock=self.clock)
        self.site, _, _ = make_site(self.gate, clock=self.clock)

    def request(self, path: str, method: str = "GET", secure: bool = False, host: str = "gw:8080",
                **headers: str) -> Response:
        channel, transport = connect(self.site, secure=secure)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        [response] = parse_responses(transport.value())
        return response

    def challenges(self, path: str = "/status", **kw: Any) -> list[str]:
        response = self.request(path, **kw)
        self.assertEqual(response.status, 401)
        return response.headers["www-authenticate"]

    def digest(self, path: str = "/status", user: str = "admin", password: str = "admin", which: int = 0,
               **kw: Any) -> str:
        return digest_header(self.challenges(path)[which], user, password, "GET", path, **kw)


class DigestTests(GateCase):
    def test_challenge_offers_sha256_then_md5(self) -> None:
        sha, md5 = self.challenges()
        self.assertTrue(sha.startswith("digest "))
        sha_params, md5_params = parse_auth_params(sha[7:]), parse_auth_params(md5[7:])
        self.assertEqual((sha_params["algorithm"], md5_params["algorithm"]), ("SHA-256", "MD5"))
        self.assertEqual((sha_params["qop"], sha_params["realm"]), ("auth", "config"))
        self.assertTrue(sha_params["nonce"] and sha_params["opaque"])
        self.assertNotIn("stale", sha_params)

    def test_sha256(self) -> None:
        response = self.request("/status", Authorization=self.digest(which=0))
        self.assertEqual((response.status, response.body), (200, b"hello admin /status"))

    def test_md5(self) -> None:
        response = self.request("/status", Authorization=self.digest(which=1))
        self.assertEqual((response.status, response.body), (200, b"hello admin /status"))

    def test_query_is_part_of_the_uri(self) -> None:
        header = self.digest("/status?line=1")
        self.assertEqual(self.request("/status?line=1", Authorization=header).status, 200)

    def test_wrong_password(self) -> None:
        self.assertEqual(self.request("/status", Authorization=self.digest(password="nope")).status, 401)

    def test_unknown_user(self) -> None:
        self.assertEqual(self.request("/status", Authorization=self.digest(user="eve")).status, 401)

    def test_replay_refused(self) -> None:
        header = self.digest()
        self.assertEqual(self.request("/status", Authorization=header).status, 200)
        self.assertEqual(self.request("/status", Authorization=header).status, 401)

    def test_nonce_counts(self) -> None:
        """The same nonce with new counts is accepted, also out of order; each count once."""
        challenge = self.challenges()[0]
        for nc in (1, 3, 2, 4):
            header = digest_header(challenge, "admin", "admin", "GET", "/status", nc=nc)
            self.assertEqual(self.request("/status", Authorization=header).status, 200, nc)
        header = digest_header(challenge, "admin", "admin", "GET", "/status", nc=3)
        self.assertEqual(self.request("/status", Authorization=header).status, 401)

    def test_nonce_count_window(self) -> None:
        store = NonceStore(Clock())
        nonce = store.issue("config")
        self.assertTrue(store.use(nonce, NC_WINDOW + 10))
        self.assertFalse(store.use(nonce, 10))
        self.assertTrue(store.use(nonce, 11))
        self.assertFalse(store.use(nonce, 11))

    def test_expired_nonce_is_stale(self) -> None:
        header = self.digest()
        self.clock.advance(NONCE_LIFETIME + 1)
        response = self.request("/status", Authorization=header)
        self.assertEqual(response.status, 401)
        params = parse_auth_params(response.headers["www-authenticate"][0][7:])
        self.assertEqual(params["stale"], "true")

    def test_nonce_count_zero_refused(self) -> None:
        """Counts start at 1 (RFC 7616 3.4): nc=00000000 is refused, and 00000001 then still works."""
        challenge = self.challenges()[0]
        zero = digest_header(challenge, "admin", "admin", "GET", "/status", nc=0)
        self.assertIn("nc=00000000", zero)
        self.assertEqual(self.request("/status", Authorization=zero).status, 401)
        self.assertFalse(AdmitsTests.admits(self, "/status", zero, method=b"GET"))  # type: ignore[arg-type]
        one = digest_header(challenge, "admin", "admin", "GET", "/status", nc=1)
        self.assertEqual(self.request("/status", Authorization=one).status, 200)

    def test_nonce_bound_to_its_challenges_algorithm(self) -> None:
        """A nonce of the SHA-256 challenge answered with MD5 (a downgrade) is refused, and the other way round."""
        sha, md5 = self.challenges()
        for challenge, other in ((sha, "MD5"), (md5, "SHA-256")):
            crossed = digest_header(challenge, "admin", "admin", "GET", "/status", algorithm=other)
            self.assertIn(f"algorithm={other}", crossed)
            response = self.request("/status", Authorization=crossed)
            self.assertEqual(response.status, 401, other)
            self.assertNotIn("stale", response.headers["www-authenticate"][0], "not an expired nonce")
        for challenge in (sha, md5):
            header = digest_header(challenge, "admin", "admin", "GET", "/status")
            self.assertEqual(self.request("/status", Authorization=header).status, 200)

    def test_uri_must_be_the_requests(self) -> None:
        header = digest_header(self.challenges()[0], "admin", "admin", "GET", "/other")
        self.assertEqual(self.request("/status", Authorization=header).status, 401)

    def test_method_is_bound(self) -> None:
        header = digest_header(self.challenges()[0], "admin", "admin", "POST", "/status")
        self.assertEqual(self.request("/status", Authorization=header).status, 401)

    def test_refusals_are_401_never_500(self) -> None:
        """Unknown algorithms, -sess, auth-int, userhash, garbage: 401."""
        challenge = self.challenges()[0]
        bad = [
            digest_header(challenge, "admin", "admin", "GET", "/status", algorithm="SHA-512"),
            digest_header(challenge, "admin", "admin", "GET", "/status", algorithm="MD5-sess"),
            digest_header(challenge, "admin", "admin", "GET", "/status", qop="auth-int"),
            digest_header(challenge, "admin", "admin", "GET", "/status", userhash="true"),
            digest_header(challenge, "admin", "admin", "GET", "/status", realm="other"),
            digest_header(challenge, "admin", "admin", "GET", "/status", opaque="x"),
            digest_header(challenge, "admin", "admin", "GET", "/status").replace("nc=00000001", "nc=1"),
            digest_header(challenge, "admin", "admin", "GET", "/status", response="zz"),
            digest_header(challenge, "admin", "admin", "GET", "/status", nonce="made-up"),
            digest_header(challenge, "admin", "admin", "GET", "/status").replace(", qop=auth", ""),
            'Digest username="admin", username="admin"',
            "Digest garbage",
            'Digest username="unterminated',
            "Digest ",
            "Digest",
            "Bearer abc",
            basic("admin", "admin"),
        ]
        for header in bad:
            self.assertEqual(self.request("/status", Authorization=header).status, 401, header)
        channel, transport = connect(self.site)
        channel.dataReceived(b"GET /status HTTP/1.1\r\nAuthorization: Digest username=\"\xff\xfe\"\r\n\r\n")
        self.assertEqual(parse_responses(transport.value())[0].status, 401)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.site.stats.status_401, len(bad) + 2)

    def test_nonce_of_another_realm(self) -> None:
        challenge = self.challenges("/ssl/digest", secure=True)[0]
        nonce = parse_auth_params(challenge[7:])["nonce"]
        header = digest_header(self.challenges()[0], "admin", "admin", "GET", "/status", nonce=nonce)
        self.assertEqual(self.request("/status", Authorization=header).status, 401)

    def test_nonce_store_is_bounded(self) -> None:
        from cmegw.web import auth

        store = NonceStore(Clock())
        first = store.issue("config")
        for _ in range(auth.MAX_NONCES):
            store.issue("config")
        self.assertFalse(store.fresh(first, "config"))
        self.assertEqual(len(store._nonces), auth.MAX_NONCES)


class BasicTests(GateCase):
    def test_challenge(self) -> None:
        [challenge] = self.challenges("/basic")
        self.assertEqual(challenge, 'basic realm="basic", charset="UTF-8"')

    def test_good(self) -> None:
        response = self.request("/basic/x", Authorization=basic("bob", "s3cret"))
        self.assertEqual((response.status, response.body), (200, b"hello bob /basic/x"))

    def test_bad(self) -> None:
        for header in (basic("bob", "wrong"), basic("eve", "s3cret"), "Basic !!!", "Basic Ym9i",
                       "Basic " + base64.b64encode(b"bob:\xff").decode()):
            self.assertEqual(self.request("/basic", Authorization=header).status, 401, header)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_digest_refused_where_basic_is_asked(self) -> None:
        header = self.digest()
        self.assertEqual(self.request("/basic", Authorization=header.replace("/status", "/basic")).status, 401)


class HierarchyTests(GateCase):
    def test_none(self) -> None:
        response = self.request("/public/page")
        self.assertEqual((response.status, response.body), (200, b"hello - /public/page"))

    def test_longest_prefix_decides(self) -> None:
        self.assertEqual(self.request("/public").status, 200)
        self.assertEqual(self.request("/publicity").status, 401)
        self.assertEqual(self.challenges("/basic/deep/er"), ['basic realm="basic", charset="UTF-8"'])
        self.assertEqual(self.challenges("/ssl/basic/x", secure=True), ['basic realm="ssl", charset="UTF-8"'])
        self.assertEqual(len(self.challenges("/ssl/digest/x", secure=True)), 2)

    def test_encoded_path_is_decoded_first(self) -> None:
        """The directive is chosen on the decoded path, the one the pages see."""
        self.assertEqual(self.request("/%70ublic/x").status, 200)
        self.assertEqual(self.request("/%62asic").status, 401)
        self.assertEqual(self.request("//basic").headers["www-authenticate"][0][:5], "basic")

    def test_dot_segments_refused(self) -> None:
        for path in ("/public/../status", "/public/%2e%2e/status", "/public%2F..%2Fstatus", "/./status"):
            self.assertEqual(self.request(path).status, 400, path)

    def test_no_directive(self) -> None:
        self.directives = (AuthDirective("/public", "config", "None"),)
        self.assertEqual(self.request("/status").status, 403)
        self.assertEqual(self.request("/public/x").status, 200)

    def test_changes_apply_at_once(self) -> None:
        self.assertEqual(self.request("/status").status, 401)
        self.directives = (AuthDirective("/", "config", "None"),)
        self.assertEqual(self.request("/status").status, 200)


class SslTests(GateCase):
    def test_redirected_to_https(self) -> None:
        response = self.request("/ssl/page?x=1")
        self.assertEqual(response.status, 302)
        self.assertEqual(response.header("location"), "https://gw:8443/ssl/page?x=1")
        for path in ("/ssl/basic", "/ssl/digest"):
            self.assertEqual(self.request(path).status, 302)

    def test_redirect_host(self) -> None:
        self.assertEqual(self.request("/ssl", host="[::1]:80").header("location"), "https://[::1]:8443/ssl")
        self.assertEqual(self.request("/ssl", host="bad host").header("location"), "https://127.0.0.1:8443/ssl")
        self.https_port = 443
        self.assertEqual(self.request("/ssl", host="gw").header("location"), "https://gw/ssl")

    def test_refused_when_https_is_off(self) -> None:
        self.https_port = None
        self.assertEqual(self.request("/ssl/page").status, 403)

    def test_ssl_over_https_needs_no_password(self) -> None:
        response = self.request("/ssl/page", secure=True)
        self.assertEqual((response.status, response.body), (200, b"hello - /ssl/page"))

    def test_ssl_basic_and_digest_over_https(self) -> None:
        response = self.request("/ssl/basic", secure=True, Authorization=basic("carol", "pw"))
        self.assertEqual((response.status, response.body), (200, b"hello carol /ssl/basic"))
        challenge = self.challenges("/ssl/digest", secure=True)[1]
        header = digest_header(challenge, "carol", "pw", "GET", "/ssl/digest")
        self.assertEqual(self.request("/ssl/digest", secure=True, Authorization=header).status, 200)


class AdmitsTests(GateCase):
    """`AuthGate.admits`: the gate's answer from a request's head, before its body (the upload allowance)."""

    def admits(self, uri: str, authorization: str | None = None, secure: bool = False,
               method: bytes = b"POST") -> bool:
        headers = Headers({b"Authorization": [authorization.encode()]} if authorization else {})
        answers: list[object] = []
        self.gate.admits(method, uri.encode(), headers, secure).addBoth(answers.append)
        [answer] = answers
        self.assertIsInstance(answer, bool)
        return bool(answer)

    def test_as_the_gate_decides(self) -> None:
        self.assertTrue(self.admits("/basic/x", basic("bob", "s3cret")))
        self.assertTrue(self.admits("/%62asic/x", basic("bob", "s3cret")))
        self.assertTrue(self.admits("/public/x"))
        self.assertTrue(self.admits("/ssl/x", secure=True))
        self.assertTrue(self.admits("/ssl/basic", basic("carol", "pw"), secure=True))
        for uri, authorization, secure in (
                ("/basic/x", None, False), ("/basic/x", basic("bob", "wrong"), False),
                ("/basic/x", basic("eve", "s3cret"), False), ("/basic/x", "Basic Zm9vOmJhcg==", False),
                ("/basic/x", "Basic", False), ("/basic/x", "Basic ***", False), ("/basic/x", "Bearer t", False),
                ("/basic/x", 'Digest username="bob"', False), ("/status", basic("admin", "admin"), False),
                ("/public/../basic", None, False), ("/ssl/x", None, False),
                ("/ssl/basic", basic("carol", "pw"), False)):
            self.assertFalse(self.admits(uri, authorization, secure), (uri, authorization, secure))
        self.directives = ()
        self.assertFalse(self.admits("/public/x"))

    def test_digest_nonce_count_not_used_up(self) -> None:
        """Looking at a Digest response first leaves its nonce count to the gate, which uses it once."""
        challenge = self.challenges("/status")[0]
        header = digest_header(challenge, "admin", "admin", "POST", "/status")
        self.assertTrue(self.admits("/status", header))
        self.assertTrue(self.admits("/status", header))
        self.assertFalse(self.admits("/other", header), "the digest uri is bound")
        self.assertFalse(self.admits("/status", header, method=b"PUT"), "the method is bound")
        self.assertFalse(self.admits("/status", digest_header(challenge, "admin", "nope", "POST", "/status")))
        self.assertEqual(self.request("/status", method="POST", Authorization=header).status, 200)
        self.assertFalse(self.admits("/status", header), "a nonce count the gate has used")


class HelperTests(SynchronousTestCase):
    def test_factory_password(self) -> None:
        config = Config(auth=(AuthDirective("/", "config", "Digest", (ADMIN,)),))
        self.assertTrue(factory_password_in_use(config))
        changed = Config(auth=(AuthDirective("/", "config", "Digest", (make_user("admin", "config", "n3w"),)),))
        self.assertFalse(factory_password_in_use(changed))
        other = attrs.evolve(changed, auth=changed.auth + (
            AuthDirective("/x", "x", "Basic", (make_user("admin", "x", "admin"),)),))
        self.assertTrue(factory_password_in_use(other))
        self.assertFalse(factory_password_in_use(Config()))

    def test_factory_defaults_have_the_factory_password(self) -> None:
        from cmegw.config.store import factory_defaults

        self.assertTrue(factory_password_in_use(factory_defaults()))

    def test_make_user_keeps_no_password(self) -> None:
        user = make_user("ann", "config", "correct horse")
        self.assertNotIn("correct horse", repr(user))
        self.assertTrue(user.check_password("config", "correct horse"))
        self.assertRaises(ConfigError, make_user, "ann", "config", "")
        self.assertRaises(ConfigError, make_user, "a n", "config", "x")

    def test_request_path(self) -> None:
        self.assertEqual(request_path([b"", b"a", b"", b"b"]), "/a/b")
        self.assertEqual(request_path([b"a/b"]), "/a/b")
        self.assertIsNone(request_path([b"a", b".."]))

    def test_parse_auth_params(self) -> None:
        self.assertEqual(parse_auth_params('a="x, \\"y\\"", b=tok ,c=""'), {"a": 'x, "y"', "b": "tok", "c": ""})
        for bad in ('a="x', "a", "=x", "a=x b=y", 'a=1, a=2'):
            self.assertRaises(ValueError, parse_auth_params, bad)
