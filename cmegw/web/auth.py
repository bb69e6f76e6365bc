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

``DigestCredentialFactory(realm, algorithm, nonces, clock=None)``
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
