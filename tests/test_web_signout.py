"""
Tests for `cmegw.web.signout` through `cmegw.web.auth.AuthGate`: the static
files served without a login, and signing out of Digest and Basic (401 with a
fresh challenge, the nonce revoked, then signing in again).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from cmegw.config.model import AuthDirective
from cmegw.web.auth import parse_auth_params
from cmegw.web.signout import TOKEN_LIFETIME, SignOuts
from tests.test_web_auth import BOB, GateCase, basic
from tests.web_helpers import ADMIN, digest_header


class StaticFilesTests(GateCase):
    def test_static_files_need_no_login(self) -> None:
        """A page drawn after a password change keeps its stylesheet: /static/ answers without credentials."""
        response = self.request("/static/cmegw.css")
        self.assertEqual((response.status, response.body), (200, b"hello - /static/cmegw.css"))
        self.assertEqual(self.request("/static/cmegw.css", Authorization=basic("admin", "old")).status, 200)
        self.assertEqual(self.request("/staticx").status, 401)
        self.assertEqual(self.request("/static").status, 401, "only the files under /static/")

    def test_admits_static_files(self) -> None:
        answers: list[object] = []
        from twisted.web.http_headers import Headers

        self.gate.admits(b"GET", b"/static/cmegw.css", Headers(), False).addBoth(answers.append)
        self.gate.admits(b"POST", b"/logout", Headers(), False).addBoth(answers.append)
        self.assertEqual(answers, [True, False])


class SignOutTests(GateCase):
    def sign_out_url(self) -> str:
        response = self.request("/logout")
        self.assertEqual(response.status, 303, "anyone may start a sign-out: it only touches their browser")
        location = response.header("location")
        self.assertTrue(location.startswith("/logout?signed-out="), location)
        return location

    def test_digest_sign_out_and_in_again(self) -> None:
        url = self.sign_out_url()
        challenge = self.challenges("/status")[0]  # what the browser signed in with
        header = digest_header(challenge, "admin", "admin", "GET", url)
        response = self.request(url, Authorization=header)
        self.assertEqual(response.status, 401)
        self.assertIn(b"Signed out", response.body)
        self.assertIn(b'href="/status">Sign in again', response.body)
        self.assertIn(b'href="/static/cmegw.css"', response.body)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        fresh = response.headers["www-authenticate"]
        self.assertEqual(len(fresh), 2)
        self.assertNotIn("stale", parse_auth_params(fresh[0][7:]))

        # The browser's cached answer (the same nonce, the next count) is refused, and not as stale.
        cached = digest_header(challenge, "admin", "admin", "GET", "/status", nc=2)
        refused = self.request("/status", Authorization=cached)
        self.assertEqual(refused.status, 401)
        self.assertNotIn("stale", parse_auth_params(refused.headers["www-authenticate"][0][7:]))

        # The person types the password at the prompt: the browser retries the same URL with a new nonce.
        again = digest_header(fresh[0], "admin", "admin", "GET", url)
        response = self.request(url, Authorization=again)
        self.assertEqual((response.status, response.header("location")), (303, "/status"))
        self.assertEqual(self.request(url, Authorization=digest_header(fresh[0], "admin", "wrong", "GET", url,
                                                                       nc=2)).status, 401)

    def test_basic_sign_out(self) -> None:
        self.directives = (AuthDirective("/", "basic", "Basic", (BOB,)),)
        response = self.request("/logout", Authorization=basic("bob", "s3cret"))
        url = response.header("location")
        first = self.request(url, Authorization=basic("bob", "s3cret"))
        self.assertEqual(first.status, 401)
        self.assertEqual(first.headers["www-authenticate"], ['basic realm="basic", charset="UTF-8"'])
        self.assertIn(b"Signed out", first.body)
        second = self.request(url, Authorization=basic("bob", "s3cret"))
        self.assertEqual((second.status, second.header("location")), (303, "/status"))
        self.assertEqual(self.request(url).status, 401, "signing in again needs the password")

    def test_unknown_or_expired_token_starts_over(self) -> None:
        response = self.request("/logout?signed-out=made-up")
        self.assertEqual(response.status, 303)
        url = response.header("location")
        self.assertNotEqual(url, "/logout?signed-out=made-up")
        self.clock.advance(TOKEN_LIFETIME + 1)
        self.assertEqual(self.request(url).status, 303)

    def test_without_a_login_there_is_nothing_to_sign_out_of(self) -> None:
        self.directives = (AuthDirective("/", "config", "None", (ADMIN,)),)
        response = self.request("/logout")
        self.assertEqual((response.status, response.header("location")), (303, "/status"))


class SignOutsTests(SynchronousTestCase):
    def test_bounded(self) -> None:
        clock = Clock()
        store = SignOuts(clock)
        first = store.issue()
        for _ in range(300):
            store.issue()
        self.assertEqual(store.answer(first), "unknown")
        self.assertLessEqual(len(store._tokens), 256)

    def test_first_then_again(self) -> None:
        store = SignOuts(Clock())
        token = store.issue()
        self.assertEqual([store.answer(token), store.answer(token)], ["first", "again"])
