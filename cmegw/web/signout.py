# -*- test-case-name: tests.test_web_signout -*-
"""
Signing out of HTTP Basic and Digest, for `cmegw.web.auth.AuthGate`.

A browser keeps Basic or Digest credentials until the server refuses them,
so signing out is a refusal the browser takes for "forget the password":

1. ``GET /logout`` answers 303 to ``/logout?signed-out=TOKEN``, a fresh
   one-time token (`SignOuts.issue`).
2. The first request for that token answers 401 with a fresh challenge
   (a new Digest nonce, never ``stale``: the browser must ask the person,
   not retry) and the page "Signed out — sign in again"; the Digest nonce the
   request came with is revoked (`NonceStore.revoke`), so the browser cannot
   sign in again with its cached answer.
3. A later request for the same token is someone who typed a name and
   password at the browser's prompt: checked as any other, it is sent on to
   ``/status``.

The page links its stylesheet: ``/static/`` is served without a login
(`PUBLIC_PREFIX`), as LuCI serves ``/luci-static``.
"""

from __future__ import annotations

import html
import secrets
from typing import Any

import attrs
from twisted.web._auth.wrapper import UnauthorizedResource
from twisted.web.resource import IResource
from zope.interface import implementer

from cmegw.web.digest import MINUTE, parse_auth_params

#: Where the "Sign out" link points.
SIGN_OUT_PATH = "/logout"
#: The query parameter of the one-time token.
TOKEN_PARAMETER = b"signed-out"
#: Where a person who signed in again is sent.
AFTER_SIGN_IN = b"/status"
#: Paths served to anyone: the stylesheets, scripts and icons (no setting, no state).
PUBLIC_PREFIX = "/static/"
#: Seconds a sign-out token is honoured; tokens remembered at most.
TOKEN_LIFETIME = 10 * MINUTE
MAX_TOKENS = 256

#: The first request of a token was answered with 401 (the browser was told to forget).
FIRST = "first"
#: A request after that: the person signs in again.
AGAIN = "again"
#: No such token (expired, or made up): start over.
UNKNOWN = "unknown"


@attrs.define
class SignOuts:
    """The one-time tokens of the sign-outs in progress, bounded in number and age."""

    clock: Any = None
    _tokens: dict[str, tuple[float, bool]] = attrs.field(init=False, factory=dict)

    def _now(self) -> float:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        return float(self.clock.seconds())

    def issue(self) -> str:
        now = self._now()
        for token, (issued, _answered) in list(self._tokens.items()):
            if now - issued <= TOKEN_LIFETIME and len(self._tokens) < MAX_TOKENS:
                break  # issued in order: the rest are younger
            del self._tokens[token]
        token = secrets.token_urlsafe(16)
        self._tokens[token] = (now, False)
        return token

    def answer(self, token: str) -> str:
        """`FIRST` the first time a token comes back, `AGAIN` after that, `UNKNOWN` for no such token."""
        found = self._tokens.get(token)
        if found is None or self._now() - found[0] > TOKEN_LIFETIME:
            self._tokens.pop(token, None)
            return UNKNOWN
        if found[1]:
            return AGAIN
        self._tokens[token] = (found[0], True)
        return FIRST


def sign_out_token(request: Any) -> str:
    """The token of a ``/logout?signed-out=TOKEN`` request ("" when none)."""
    values = (getattr(request, "args", None) or {}).get(TOKEN_PARAMETER) or [b""]
    return values[0].decode("ascii", "replace")


def digest_nonce(request: Any) -> str:
    """The nonce of the request's Digest Authorization header ("" for none)."""
    header = request.getHeader(b"authorization") or b""
    scheme, _space, rest = header.partition(b" ")
    if scheme.lower() != b"digest":
        return ""
    try:
        return parse_auth_params(rest.decode("utf-8")).get("nonce", "")
    except (ValueError, UnicodeDecodeError):
        return ""


@implementer(IResource)
class Redirect:
    """A redirect to `location` (303 See Other unless `code` says otherwise), never cached."""

    isLeaf = True

    def __init__(self, location: bytes, code: int = 303, note: bytes = b"See ") -> None:
        self.location = location
        self.code = code
        self.note = note

    def render(self, request: Any) -> bytes:
        request.setResponseCode(self.code)
        request.setHeader(b"Location", self.location)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return self.note + self.location + b"\n"

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: bytes, child: Any) -> None:
        raise NotImplementedError()


def signed_out_page(again: str) -> bytes:
    """The page a browser shows when the person cancels its password prompt after signing out."""
    link = html.escape(again, quote=True)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>Signed out</title><link rel=\"stylesheet\" href=\"/static/cmegw.css\"></head>"
            "<body><main class=\"signed-out\"><section class=\"card\"><h1>Signed out</h1>"
            "<p>Your browser has forgotten the user name and password of this gateway.</p>"
            f"<p><a class=\"button\" href=\"{link}\">Sign in again</a></p>"
            "</section></main></body></html>\n").encode("utf-8")


class SignedOut(UnauthorizedResource):
    """401 with fresh challenges and the "Signed out — sign in again" page (not Twisted's "Unauthorized")."""

    def render(self, request: Any) -> bytes:
        super().render(request)  # the status and the WWW-Authenticate headers
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        return b"" if request.method == b"HEAD" else signed_out_page(AFTER_SIGN_IN.decode("ascii"))


__all__ = ["SignOuts", "SignedOut", "Redirect", "SIGN_OUT_PATH", "PUBLIC_PREFIX", "sign_out_token",
           "digest_nonce", "FIRST", "AGAIN", "UNKNOWN"]
