# -*- test-case-name: tests.test_web_auth -*-
"""
Authentication directives: who may see which URI, on `twisted.web.guard` and
`twisted.cred`.

Public API (the pages code against this):

``AuthGate(resource, directives, https_port, nonces=None, clock=None, logins=None)``
    The root resource the web service serves: for each request it picks the
    directive with the longest matching URI prefix from ``directives()`` (read
    per request, so a changed configuration applies at once) and then lets the
    request through (None; SSL over HTTPS), asks for Basic or Digest
    credentials through an ``HTTPAuthSessionWrapper`` (Basic, Digest and the
    SSL/ variants over HTTPS), redirects SSL types to HTTPS (``https_port()``
    is the HTTPS port listening, or None: then 403), or answers 403 when no
    directive covers the path.  Paths with ``.`` or ``..`` segments get 400.
    ``/static/`` (stylesheets, scripts, icons) is served to anyone, as LuCI
    serves ``/luci-static``: a page drawn just after a password change, or
    the signed-out page, keeps its stylesheet.  ``/logout`` signs the
    browser out (`cmegw.web.signout`: 401 with a fresh challenge, the Digest
    nonce revoked, then "sign in again").
    ``admits(method, uri, headers, secure, peer=None) -> Deferred[bool]``: whether a
    request will get through, judged from its head before its body arrives
    (valid credentials checked, a Digest nonce count not used up).
    ``logins`` (`cmegw.login.LoginLimiter`, the gateway's ``state.logins``):
    a wrong Basic or Digest user name or password is logged and counted
    there per source address; while the source has to wait (after a few
    failures) or is blocked (after more), a Basic or Digest path answers
    429 with ``Retry-After`` without looking at the credentials; a good
    login clears the source's count.  None: no limit.

``authenticated_user(request) -> str | None``
    The user name the request was authenticated as (Basic or Digest), None
    for None/SSL directives.  Stored as the attribute ``cmegw_user`` on the
    request by the gate, before the admin resource sees the request;
    ``set_authenticated_user(request, name)`` sets it (for page tests with
    ``DummyRequest``).  ``request.getUser()`` is NOT the authenticated user.

``factory_password_in_use(config) -> bool``
    True while any directive still has the user ``admin`` with the password
    ``admin`` (the pages show a warning with a link to change it).

``make_user(name, realm, password) -> User``
    The stored form of a user of the directive with that realm (HA1 for MD5
    and SHA-256; the password itself is not kept).  Raises ``ConfigError``
    with the model's message.  A user's hashes depend on the realm: when a
    directive's realm changes, its users need new passwords.

``DigestCredentialFactory``, ``NonceStore``, ``DigestResponse``,
``parse_auth_params``: RFC 7616 Digest, in `cmegw.web.digest` (named here too).
``DirectiveChecker(directive)``: the ``ICredentialsChecker`` of one directive.

No password is stored, shown or logged: Basic is checked by computing the
SHA-256 HA1 of the offered password; Digest against the stored HA1.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

import attrs
from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameDigestHash, IUsernamePassword
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import pages
from twisted.web.guard import BasicCredentialFactory as _TwistedBasic
from twisted.web.guard import HTTPAuthSessionWrapper
from twisted.web.http import unquote
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from zope.interface import implementer

from cmegw.config.model import AuthDirective, Config, User, directive_for, ha1
from cmegw.login import WEB, LoginLimiter
from cmegw.web.signout import (
    AFTER_SIGN_IN,
    AGAIN,
    FIRST,
    PUBLIC_PREFIX,
    SIGN_OUT_PATH,
    TOKEN_PARAMETER,
    Redirect,
    SignedOut,
    SignOuts,
    digest_nonce,
    sign_out_token,
)
from cmegw.web.digest import (  # noqa: F401 (MAX_NONCES, MINUTE, NC_WINDOW: named here as before)
    DIGEST_ALGORITHMS,
    MAX_NONCES,
    MINUTE,
    NC_WINDOW,
    NONCE_LIFETIME,
    DigestCredentialFactory,
    DigestResponse,
    NonceStore,
    parse_auth_params,
)

log = Logger(namespace="cmegw.web.auth")

FACTORY_USER = "admin"
FACTORY_PASSWORD = "admin"

USER_ATTRIBUTE = "cmegw_user"


def authenticated_user(request: Any) -> str | None:
    """The user name this request was authenticated as, or None."""
    return getattr(request, USER_ATTRIBUTE, None)


def set_authenticated_user(request: Any, name: str | None) -> None:
    setattr(request, USER_ATTRIBUTE, name)


def factory_password_in_use(config: Config) -> bool:
    """Whether a directive still lets ``admin`` in with the factory password ``admin``."""
    return any(user.name == FACTORY_USER and user.check_password(directive.realm, FACTORY_PASSWORD)
               for directive in config.auth for user in directive.users)


def make_user(name: str, realm: str, password: str) -> User:
    """A user of a directive with this realm, as stored (digests, never the password)."""
    return User.with_password(name, realm, password)


class BasicCredentialFactory(_TwistedBasic):
    """Twisted's Basic with a UTF-8 realm and ``charset="UTF-8"`` (RFC 7617)."""

    def getChallenge(self, request: Any) -> dict[str, bytes]:
        return {"realm": self.authenticationRealm.encode("utf-8"), "charset": b"UTF-8"}


# -- cred: checker and realm ---------------------------------------------------------


@implementer(ICredentialsChecker)
class DirectiveChecker:
    """The users of one directive: Basic passwords and Digest responses against their HA1s."""

    credentialInterfaces = (IUsernamePassword, IUsernameDigestHash)

    def __init__(self, directive: AuthDirective) -> None:
        self.directive = directive

    def requestAvatarId(self, credentials: Any) -> defer.Deferred:
        try:
            name = self._verified_name(credentials)
        except Exception:
            log.failure("Checking credentials failed; refused")
            name = None
        return defer.succeed(name) if name is not None else defer.fail(error.UnauthorizedLogin())

    def _verified_name(self, credentials: Any) -> str | None:
        name = credentials.username
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                return None
        user = next((u for u in self.directive.users if u.name == name), None)
        if isinstance(credentials, DigestResponse):
            if user is None:
                credentials.expected("0" * 64)  # the same work for an unknown name
                return None
            stored = user.ha1_sha256 if credentials.algorithm == "SHA-256" else user.ha1_md5
            return name if credentials.checkHash(stored) else None
        try:
            password = credentials.password.decode("utf-8")
        except (AttributeError, UnicodeDecodeError):
            return None
        if user is None:
            ha1("nobody", self.directive.realm, password, "SHA-256")  # the same work
            return None
        return name if user.check_password(self.directive.realm, password) else None


@implementer(IResource)
class _AsUser:
    """The admin resource, seen by a request authenticated as `name`."""

    def __init__(self, name: str | None, resource: Any) -> None:
        self.name = name
        self.resource = resource

    @property
    def isLeaf(self) -> bool:
        return bool(self.resource.isLeaf)

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        set_authenticated_user(request, self.name)
        return self.resource.getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        set_authenticated_user(request, self.name)
        return self.resource.render(request)

    def putChild(self, path: bytes, child: Any) -> None:
        raise NotImplementedError()


@implementer(IRealm)
class _ResourceRealm:
    def __init__(self, resource: Any) -> None:
        self.resource = resource

    def requestAvatar(self, avatarId: str, mind: Any, *interfaces: Any) -> tuple[Any, Any, Callable[[], None]]:
        if IResource not in interfaces:
            raise NotImplementedError("only IResource avatars")
        return IResource, _AsUser(avatarId, self.resource), lambda: None


# -- the gate ------------------------------------------------------------------------


@attrs.define(slots=False)
class _RequestHead:
    """What a credential factory reads of a request whose body has not arrived (`AuthGate.admits`)."""

    method: bytes
    uri: bytes


_HOST = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:[0-9]{1,5})?$")


@implementer(IResource)
class _TooManyFailures:
    """429 with Retry-After: the source failed to log in too often."""

    isLeaf = True

    def __init__(self, wait: float) -> None:
        self.wait = max(1, math.ceil(wait))

    def render(self, request: Any) -> bytes:
        request.setResponseCode(429)
        request.setHeader(b"Retry-After", b"%d" % self.wait)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Too many failed logins from your address; try again in %d seconds.\n" % self.wait

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: bytes, child: Any) -> None:
        raise NotImplementedError()


class _LimitedWrapper(HTTPAuthSessionWrapper):
    """twisted.web.guard's wrapper telling the login limiter how a request's credentials did."""

    def __init__(self, portal: Portal, factories: list[Any], logins: LoginLimiter, source: str,
                 realm: str) -> None:
        super().__init__(portal, factories)
        self._logins = logins
        self._source = source
        self._realm = realm

    def _login(self, credentials: Any) -> defer.Deferred:
        d = self._portal.login(credentials, None, IResource)
        d.addCallbacks(self._succeeded, self._failed, errbackArgs=(credentials,))
        return d

    def _succeeded(self, args: Any) -> Any:
        self._logins.succeeded(self._source)
        return self._loginSucceeded(args)

    def _failed(self, result: Any, credentials: Any) -> Any:
        if result.check(error.UnauthorizedLogin):
            self._logins.failed(self._source, WEB, getattr(credentials, "username", ""), self._realm)
        return self._loginFailed(result)


def request_path(segments: Iterable[bytes]) -> str | None:
    """The path a directive is chosen by (decoded, empty segments dropped), None when it has . or .."""
    text = "/" + "/".join(s.decode("utf-8", "replace") for s in segments)
    parts = text.split("/")
    if any(p in (".", "..") for p in parts):
        return None
    return "/" + "/".join(p for p in parts if p)


def _not_utf8(request: Any) -> str | None:
    """What of the request (its decoded path, its host name) is not UTF-8, or None."""
    try:
        b"/".join(request.prepath + request.postpath).decode("utf-8")
    except UnicodeDecodeError:
        return "path"
    try:
        request.getRequestHostname().decode("utf-8")
    except UnicodeDecodeError:
        return "host name"
    return None


@implementer(IResource)
class AuthGate:
    """
    The authentication in front of the admin resource: the longest matching
    directive decides (see the module docstring).
    """

    isLeaf = False

    def __init__(self, resource: Any, directives: Callable[[], tuple[AuthDirective, ...]],
                 https_port: Callable[[], int | None], nonces: NonceStore | None = None,
                 clock: Any = None, logins: LoginLimiter | None = None) -> None:
        self.resource = resource
        self.logins = logins
        self.directives = directives
        self.https_port = https_port
        self.nonces = nonces if nonces is not None else NonceStore(clock)
        self.sign_outs = SignOuts(clock)

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        request.postpath.insert(0, request.prepath.pop())
        return self.resource_for(request)

    def render(self, request: Any) -> Any:
        resource = self.resource_for(request)
        return resource.render(request)

    def putChild(self, path: bytes, child: Any) -> None:
        raise NotImplementedError()

    def resource_for(self, request: Any) -> Any:
        """What answers this request: the admin resource, a login challenge, a redirect or a refusal."""
        set_authenticated_user(request, None)
        undecodable = _not_utf8(request)
        if undecodable:
            # Klein would log a traceback for each ("Invalid encoding in PATH_INFO"): one line instead.
            log.info("400 for {peer}: the {what} is not UTF-8", peer=getattr(request.getClientAddress(), "host", "-"),
                     what=undecodable)
            return pages.errorPage(400, "Bad Request", f"The {undecodable} is not UTF-8.")
        path = request_path(request.prepath + request.postpath)
        if path is None:
            return pages.errorPage(400, "Bad Request", "A path with . or .. segments is not served.")
        if path.startswith(PUBLIC_PREFIX):
            return self.resource
        directive = directive_for(self.directives(), path)
        if directive is None:
            return pages.errorPage(403, "Forbidden", "No authentication directive covers this path.")
        kind = directive.auth_type
        if kind.startswith("SSL") and not request.isSecure():
            return self._to_https(request)
        if path == SIGN_OUT_PATH:
            return self._sign_out(request, directive)
        if kind in ("None", "SSL"):
            return self.resource
        return self._protected(request, directive, self.resource)

    def _protected(self, request: Any, directive: AuthDirective, resource: Any) -> Any:
        """`resource` behind a Basic or Digest directive's login (and the login limiter)."""
        if self.logins is None:
            return HTTPAuthSessionWrapper(*self._guard(directive, resource))
        source = str(getattr(request.getClientAddress(), "host", "-"))
        wait = self.logins.wait(source)
        if wait > 0:
            self.logins.refused(source, WEB, wait)
            return _TooManyFailures(wait)
        return _LimitedWrapper(*self._guard(directive, resource), self.logins, source, directive.realm)

    def _sign_out(self, request: Any, directive: AuthDirective) -> Any:
        """``/logout``: the browser is told to forget its credentials (`cmegw.web.signout`)."""
        if directive.auth_type in ("None", "SSL"):
            return Redirect(AFTER_SIGN_IN)
        answer = self.sign_outs.answer(sign_out_token(request))
        if answer == FIRST:
            nonce = digest_nonce(request)
            if nonce:
                self.nonces.revoke(nonce)
            return SignedOut(self._guard(directive)[1])
        if answer == AGAIN:
            return self._protected(request, directive, Redirect(AFTER_SIGN_IN))
        token = self.sign_outs.issue().encode("ascii")
        return Redirect(SIGN_OUT_PATH.encode("ascii") + b"?" + TOKEN_PARAMETER + b"=" + token)

    def _guard(self, directive: AuthDirective, resource: Any = None) -> tuple[Portal, list[Any]]:
        """The portal and credential factories that check a Basic or Digest directive's users."""
        portal = Portal(_ResourceRealm(self.resource if resource is None else resource),
                        [DirectiveChecker(directive)])
        if directive.auth_type.endswith("Basic"):
            return portal, [BasicCredentialFactory(directive.realm)]
        return portal, [DigestCredentialFactory(directive.realm, a, self.nonces) for a in DIGEST_ALGORITHMS]

    def admits(self, method: bytes, uri: bytes, headers: Headers, secure: bool,
               peer: str | None = None) -> defer.Deferred:
        """
        Whether a request with this request line and these headers will reach
        the admin resource (a Deferred bool), decided before its body is read:
        the HTTP layer gives an upload's body allowance only then.  True where
        `resource_for` lets it through: None, SSL over HTTPS, and Basic or
        Digest credentials valid for the path's directive (through the same
        portal, checker and credential factories; a Digest nonce count is
        looked at, not used up: the gate uses it when the whole request is
        in).  False where the gate answers 400, 403, a redirect, 401 or 429
        (`peer`, the client's address, has to wait after failed logins).
        """
        path = request_path(unquote(segment) for segment in uri.partition(b"?")[0][1:].split(b"/"))
        if path is not None and (path.startswith(PUBLIC_PREFIX) or path == SIGN_OUT_PATH):
            return defer.succeed(path.startswith(PUBLIC_PREFIX))
        directive = directive_for(self.directives(), path) if path is not None else None
        if directive is None or (directive.auth_type.startswith("SSL") and not secure):
            return defer.succeed(False)
        if directive.auth_type in ("None", "SSL"):
            return defer.succeed(True)
        if self.logins is not None and self.logins.wait(peer or "-") > 0:
            return defer.succeed(False)
        authorization = (headers.getRawHeaders(b"authorization") or [b""])[-1]
        portal, factories = self._guard(directive)
        scheme, _space, response = authorization.partition(b" ")
        factory = next((f for f in factories if f.scheme == scheme.lower()), None)
        if factory is None:
            return defer.succeed(False)
        try:
            credentials = factory.decode(response, _RequestHead(method, uri))
        except Exception:  # LoginFailed: the gate's 401; anything else: the gate's 500
            return defer.succeed(False)
        if isinstance(credentials, DigestResponse):
            credentials = attrs.evolve(credentials, spend=False)
        login = portal.login(credentials, None, IResource)
        return login.addCallbacks(lambda _avatar: True, lambda _failure: False)

    def _to_https(self, request: Any) -> Any:
        port = self.https_port()
        if port is None:
            return pages.errorPage(403, "Forbidden", "This page needs HTTPS, and HTTPS is off.")
        header = request.getHeader(b"host") or b""
        match = _HOST.match(header)
        host = match.group(1) if match else str(getattr(request.getHost(), "host", "localhost")).encode()
        if b":" in host and not host.startswith(b"["):
            host = b"[" + host + b"]"
        netloc = host if port == 443 else host + b":%d" % port
        target = request.uri if request.uri.startswith(b"/") else b"/"
        return Redirect(b"https://" + netloc + target, 302, b"This page needs HTTPS: ")


__all__ = [
    "AuthGate", "authenticated_user", "set_authenticated_user", "factory_password_in_use", "make_user",
    "DigestCredentialFactory", "BasicCredentialFactory", "NonceStore", "DirectiveChecker", "DigestResponse",
    "parse_auth_params", "NONCE_LIFETIME",
]
