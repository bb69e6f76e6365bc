# -*- test-case-name: tests.test_web_auth -*-
"""
Authentication directives: who may see which URI, on `twisted.web.guard` and
`twisted.cred`.

Public API (the pages code against this):

``AuthGate(resource, directives, https_port, nonces=None, clock=None)``
    The root resource the web service serves: for each request it picks the
    directive with the longest matching URI prefix from ``directives()`` (read
    per request, so a changed configuration applies at once) and then lets the
    request through (None; SSL over HTTPS), asks for Basic or Digest
    credentials through an ``HTTPAuthSessionWrapper`` (Basic, Digest and the
    SSL/ variants over HTTPS), redirects SSL types to HTTPS (``https_port()``
    is the HTTPS port listening, or None: then 403), or answers 403 when no
    directive covers the path.  Paths with ``.`` or ``..`` segments get 400.
    ``admits(method, uri, headers, secure) -> Deferred[bool]``: whether a
    request will get through, judged from its head before its body arrives
    (valid credentials checked, a Digest nonce count not used up).

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

``DigestCredentialFactory(realm, algorithm, nonces)``
    RFC 7616 Digest (qop=auth; SHA-256 and MD5 each offered in its own
    challenge), with nonce expiry (`NONCE_LIFETIME`, answered with
    ``stale=true``), nonce-count tracking (a replayed Authorization header is
    refused), the digest ``uri`` bound to the request's, constant-time
    comparison; anything unexpected (unknown algorithm, ``-sess``,
    ``auth-int``, ``userhash``, a bad header) is a 401, never a 500.
``NonceStore(clock=None)``: the server's nonces, bounded (`MAX_NONCES`).
``DirectiveChecker(directive)``: the ``ICredentialsChecker`` of one directive.

No password is stored, shown or logged: Basic is checked by computing the
SHA-256 HA1 of the offered password; Digest against the stored HA1.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
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
from twisted.web.iweb import ICredentialFactory
from twisted.web.resource import IResource
from zope.interface import implementer

from cmegw.config.model import AuthDirective, Config, User, directive_for, ha1

log = Logger(namespace="cmegw.web.auth")

MINUTE = 60
#: Seconds a Digest nonce is accepted; after that the client is told ``stale=true``.
NONCE_LIFETIME = 5 * MINUTE
#: Nonces remembered at most (the oldest are forgotten first).
MAX_NONCES = 4096
#: Nonce counts remembered per nonce: an older count than the highest minus this is refused.
NC_WINDOW = 256
#: Digest algorithms offered, in order of preference.
DIGEST_ALGORITHMS = ("SHA-256", "MD5")
FACTORY_USER = "admin"
FACTORY_PASSWORD = "admin"

USER_ATTRIBUTE = "cmegw_user"

_HASHES: dict[str, Callable[[bytes], Any]] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


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


# -- Digest (RFC 7616) -------------------------------------------------------------


@attrs.define
class _Nonce:
    realm: str
    issued: float
    highest: int = 0
    used: set[int] = attrs.field(factory=set)


@attrs.define
class NonceStore:
    """
    The nonces this server handed out, each for one realm, each accepted for
    `NONCE_LIFETIME` seconds, each nonce count accepted once.
    """

    clock: Any = None
    lifetime: float = NONCE_LIFETIME
    opaque: str = attrs.field(factory=lambda: secrets.token_urlsafe(12))
    _nonces: dict[str, _Nonce] = attrs.field(init=False, factory=dict)

    def _now(self) -> float:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        return float(self.clock.seconds())

    def issue(self, realm: str) -> str:
        now = self._now()
        for nonce, state in list(self._nonces.items()):
            if now - state.issued <= self.lifetime:
                break  # issued in order: the rest are younger
            del self._nonces[nonce]
        while len(self._nonces) >= MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        nonce = secrets.token_urlsafe(24)
        self._nonces[nonce] = _Nonce(realm, now)
        return nonce

    def fresh(self, nonce: str, realm: str, at: float | None = None) -> bool:
        """Whether `nonce` was issued for `realm` and had not expired at `at` (now if None)."""
        state = self._nonces.get(nonce)
        when = self._now() if at is None else at
        return state is not None and state.realm == realm and when - state.issued <= self.lifetime

    def usable(self, nonce: str, count: int) -> bool:
        """Whether `use` would accept nonce count `count` now (nothing is used up)."""
        state = self._nonces.get(nonce)
        return state is not None and count not in state.used and count > state.highest - NC_WINDOW

    def use(self, nonce: str, count: int) -> bool:
        """Accept nonce count `count` once (out of order within `NC_WINDOW`, never twice)."""
        if not self.usable(nonce, count):
            return False
        state = self._nonces[nonce]
        state.used.add(count)
        if count > state.highest:
            state.highest = count
            state.used = {c for c in state.used if c > count - NC_WINDOW}
        return True


_PARAM = re.compile(r'\s*([A-Za-z0-9_*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_HEX = re.compile(r"[0-9a-f]+")


def parse_auth_params(text: str) -> dict[str, str]:
    """The ``name=value, name="quoted"`` list of an Authorization header (RFC 7235); ValueError if malformed."""
    params: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PARAM.match(text, position)
        if match is None or match.end() == position:
            raise ValueError("malformed authorization parameters")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if name in params:
            raise ValueError(f"parameter {name} given twice")
        params[name] = value
        position = match.end()
    return params


@implementer(IUsernameDigestHash)
@attrs.frozen
class DigestResponse:
    """
    The credentials of one Digest Authorization header, checked against a
    stored HA1.  A successful check uses up the nonce count, unless `spend` is
    False (`AuthGate.admits` looks before the gate checks for good).
    """

    username: str
    algorithm: str
    method: str
    uri: str
    nonce: str
    nc: str
    cnonce: str
    qop: str
    response: str
    nonces: NonceStore
    spend: bool = True

    def expected(self, ha1: str) -> str:
        h = _HASHES[self.algorithm]
        ha2 = h(f"{self.method}:{self.uri}".encode("utf-8")).hexdigest()
        return h(f"{ha1}:{self.nonce}:{self.nc}:{self.cnonce}:{self.qop}:{ha2}".encode("utf-8")).hexdigest()

    def checkHash(self, digestHash: str) -> bool:
        """Whether the response proves the password whose HA1 is `digestHash` (with a nonce count not used yet)."""
        good = hmac.compare_digest(self.expected(digestHash).encode("ascii"), self.response.encode("ascii"))
        count = int(self.nc, 16)
        return good and (self.nonces.use(self.nonce, count) if self.spend else self.nonces.usable(self.nonce, count))


@implementer(ICredentialFactory)
class DigestCredentialFactory:
    """Digest authentication (RFC 7616, qop=auth) with one `algorithm` offered per challenge."""

    scheme = b"digest"

    def __init__(self, realm: str, algorithm: str, nonces: NonceStore) -> None:
        if algorithm not in _HASHES:
            raise ValueError(f"unknown Digest algorithm {algorithm}")
        self.realm = realm
        self.algorithm = algorithm
        self.nonces = nonces

    def getChallenge(self, request: Any) -> dict[str, bytes]:
        challenge = {
            "realm": self.realm.encode("utf-8"),
            "qop": b"auth",
            "algorithm": self.algorithm.encode("ascii"),
            "nonce": self.nonces.issue(self.realm).encode("ascii"),
            "opaque": self.nonces.opaque.encode("ascii"),
        }
        if getattr(request, "_cmegw_stale_nonce", False):
            challenge["stale"] = b"true"
        return challenge

    def decode(self, response: bytes, request: Any) -> DigestResponse:
        """The credentials of a Digest header, or `LoginFailed` (never any other error)."""
        try:
            return self._decode(response, request)
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            raise error.LoginFailed(f"Digest: {e}") from None

    def _decode(self, response: bytes, request: Any) -> DigestResponse:
        params = parse_auth_params(response.decode("utf-8"))
        if params.get("userhash", "false").lower() != "false" or "username*" in params:
            raise ValueError("userhash and username* are not offered")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in _HASHES:
            raise ValueError("algorithm not offered")
        if params.get("qop") != "auth":
            raise ValueError("qop=auth is required")
        if params["realm"] != self.realm or params.get("opaque") != self.nonces.opaque:
            raise ValueError("realm or opaque does not match")
        uri = params["uri"]
        if uri.encode("utf-8") != request.uri:
            raise ValueError("the digest uri is not the request's")
        nc, cnonce, digest = params["nc"], params["cnonce"], params["response"].lower()
        size = _HASHES[algorithm](b"").digest_size * 2
        if not (len(nc) == 8 and _HEX.fullmatch(nc.lower()) and cnonce
                and len(digest) == size and _HEX.fullmatch(digest)):
            raise ValueError("malformed nc, cnonce or response")
        nonce = params["nonce"]
        # Judged when the request's headers came in (GatewayRequest.headers_at): an upload whose
        # body takes longer than the nonce lives was sent with a fresh one.
        if not self.nonces.fresh(nonce, self.realm, at=getattr(request, "headers_at", None)):
            request._cmegw_stale_nonce = True
            raise ValueError("unknown or expired nonce")
        return DigestResponse(username=params["username"], algorithm=algorithm,
                              method=request.method.decode("latin-1"), uri=uri, nonce=nonce, nc=nc,
                              cnonce=cnonce, qop="auth", response=digest, nonces=self.nonces)


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
class _Redirect:
    isLeaf = True

    def __init__(self, location: bytes) -> None:
        self.location = location

    def render(self, request: Any) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"Location", self.location)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"This page needs HTTPS: " + self.location + b"\n"

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return self

    def putChild(self, path: bytes, child: Any) -> None:
        raise NotImplementedError()


def request_path(segments: Iterable[bytes]) -> str | None:
    """The path a directive is chosen by (decoded, empty segments dropped), None when it has . or .."""
    text = "/" + "/".join(s.decode("utf-8", "replace") for s in segments)
    parts = text.split("/")
    if any(p in (".", "..") for p in parts):
        return None
    return "/" + "/".join(p for p in parts if p)


@implementer(IResource)
class AuthGate:
    """
    The authentication in front of the admin resource: the longest matching
    directive decides (see the module docstring).
    """

    isLeaf = False

    def __init__(self, resource: Any, directives: Callable[[], tuple[AuthDirective, ...]],
                 https_port: Callable[[], int | None], nonces: NonceStore | None = None,
                 clock: Any = None) -> None:
        self.resource = resource
        self.directives = directives
        self.https_port = https_port
        self.nonces = nonces if nonces is not None else NonceStore(clock)

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
        path = request_path(request.prepath + request.postpath)
        if path is None:
            return pages.errorPage(400, "Bad Request", "A path with . or .. segments is not served.")
        directive = directive_for(self.directives(), path)
        if directive is None:
            return pages.errorPage(403, "Forbidden", "No authentication directive covers this path.")
        kind = directive.auth_type
        if kind.startswith("SSL") and not request.isSecure():
            return self._to_https(request)
        if kind in ("None", "SSL"):
            return self.resource
        return HTTPAuthSessionWrapper(*self._guard(directive))

    def _guard(self, directive: AuthDirective) -> tuple[Portal, list[Any]]:
        """The portal and credential factories that check a Basic or Digest directive's users."""
        portal = Portal(_ResourceRealm(self.resource), [DirectiveChecker(directive)])
        if directive.auth_type.endswith("Basic"):
            return portal, [BasicCredentialFactory(directive.realm)]
        return portal, [DigestCredentialFactory(directive.realm, a, self.nonces) for a in DIGEST_ALGORITHMS]

    def admits(self, method: bytes, uri: bytes, headers: Headers, secure: bool) -> defer.Deferred:
        """
        Whether a request with this request line and these headers will reach
        the admin resource (a Deferred bool), decided before its body is read:
        the HTTP layer gives an upload's body allowance only then.  True where
        `resource_for` lets it through: None, SSL over HTTPS, and Basic or
        Digest credentials valid for the path's directive (through the same
        portal, checker and credential factories; a Digest nonce count is
        looked at, not used up: the gate uses it when the whole request is
        in).  False where the gate answers 400, 403, a redirect or 401.
        """
        path = request_path(unquote(segment) for segment in uri.partition(b"?")[0][1:].split(b"/"))
        directive = directive_for(self.directives(), path) if path is not None else None
        if directive is None or (directive.auth_type.startswith("SSL") and not secure):
            return defer.succeed(False)
        if directive.auth_type in ("None", "SSL"):
            return defer.succeed(True)
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
        return _Redirect(b"https://" + netloc + target)


__all__ = [
    "AuthGate", "authenticated_user", "set_authenticated_user", "factory_password_in_use", "make_user",
    "DigestCredentialFactory", "BasicCredentialFactory", "NonceStore", "DirectiveChecker", "DigestResponse",
    "parse_auth_params", "NONCE_LIFETIME",
]
