# -*- test-case-name: tests.test_web_auth -*-
"""
Digest authentication (RFC 7616) for `cmegw.web.auth`: twisted.cred's own
Digest knows MD5 and SHA-1 only, accepts a replayed header, does not bind the
digest's ``uri`` to the request and compares with ``==``.

``DigestCredentialFactory(realm, algorithm, nonces)``
    qop=auth; SHA-256 and MD5 each offered in its own challenge, with nonce
    expiry (`NONCE_LIFETIME`, answered with ``stale=true``), nonce-count
    tracking (a replayed Authorization header is refused, counts start at
    1), each nonce bound to the algorithm of its challenge, the digest ``uri``
    bound to the request's, constant-time comparison; anything unexpected
    (unknown algorithm, ``-sess``, ``auth-int``, ``userhash``, a bad header)
    is a 401, never a 500.
``DigestResponse``: the credentials of one header, checked against a stored HA1.
``NonceStore(clock=None)``: the server's nonces, bounded (`MAX_NONCES`);
    ``revoke(nonce)`` refuses one without ``stale`` (a browser that signed out).
``parse_auth_params(text)``: the parameters of an Authorization header.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any, Callable

import attrs
from twisted.cred import error
from twisted.cred.credentials import IUsernameDigestHash
from twisted.web.iweb import ICredentialFactory
from zope.interface import implementer

MINUTE = 60
#: Seconds a Digest nonce is accepted; after that the client is told ``stale=true``.
NONCE_LIFETIME = 5 * MINUTE
#: Nonces remembered at most (the oldest are forgotten first).
MAX_NONCES = 4096
#: Nonce counts remembered per nonce: an older count than the highest minus this is refused.
NC_WINDOW = 256
#: Digest algorithms offered, in order of preference.
DIGEST_ALGORITHMS = ("SHA-256", "MD5")

_HASHES: dict[str, Callable[[bytes], Any]] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


@attrs.define
class _Nonce:
    realm: str
    issued: float
    algorithm: str = ""
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
    #: Nonces of browsers that signed out: refused without ``stale``, so the person is asked again.
    _revoked: dict[str, None] = attrs.field(init=False, factory=dict)

    def _now(self) -> float:
        if self.clock is None:
            from twisted.internet import reactor

            self.clock = reactor
        return float(self.clock.seconds())

    def issue(self, realm: str, algorithm: str = "") -> str:
        now = self._now()
        for nonce, state in list(self._nonces.items()):
            if now - state.issued <= self.lifetime:
                break  # issued in order: the rest are younger
            del self._nonces[nonce]
        while len(self._nonces) >= MAX_NONCES:
            del self._nonces[next(iter(self._nonces))]
        nonce = secrets.token_urlsafe(24)
        self._nonces[nonce] = _Nonce(realm, now, algorithm)
        return nonce

    def revoke(self, nonce: str) -> None:
        """Refuse `nonce` from now on, without ``stale=true`` (a sign-out: the browser must ask for the password)."""
        if self._nonces.pop(nonce, None) is not None:
            while len(self._revoked) >= MAX_NONCES:
                del self._revoked[next(iter(self._revoked))]
            self._revoked[nonce] = None

    def revoked(self, nonce: str) -> bool:
        return nonce in self._revoked

    def algorithm(self, nonce: str) -> str | None:
        """The algorithm of the challenge `nonce` came with ("" if issued for none), None if unknown."""
        state = self._nonces.get(nonce)
        return state.algorithm if state is not None else None

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
            "nonce": self.nonces.issue(self.realm, self.algorithm).encode("ascii"),
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
        if int(nc, 16) == 0:
            raise ValueError("nc=00000000: nonce counts start at 1")
        nonce = params["nonce"]
        # Judged when the request's headers came in (GatewayRequest.headers_at): an upload whose
        # body takes longer than the nonce lives was sent with a fresh one.
        if self.nonces.revoked(nonce):
            raise ValueError("the nonce of a browser that signed out")
        if not self.nonces.fresh(nonce, self.realm, at=getattr(request, "headers_at", None)):
            request._cmegw_stale_nonce = True
            raise ValueError("unknown or expired nonce")
        if self.nonces.algorithm(nonce) not in ("", algorithm):
            raise ValueError(f"the nonce came with a {self.nonces.algorithm(nonce)} challenge, "
                             f"not {algorithm}")
        return DigestResponse(username=params["username"], algorithm=algorithm,
                              method=request.method.decode("latin-1"), uri=uri, nonce=nonce, nc=nc,
                              cnonce=cnonce, qop="auth", response=digest, nonces=self.nonces)
