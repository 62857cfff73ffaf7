"""Bearer-token auth: every route but ``/healthz`` needs ``Authorization: Bearer TOKEN``.

A browser cannot set that header when it opens the dashboard, so the token
may also arrive once as ``/?token=TOKEN``: the service answers with an
HTTP-only, same-site cookie holding a value derived from the token (never
the token itself), which the page's own requests then carry. The cookie
opens only reading routes (GET): a page of another site on this machine
could make the browser send it with a form POST, never with a header.
With no token configured (allowed only on loopback) every request is let in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "squall_token"


class TokenCheck:
    """Compares presented credentials with the configured token in constant time."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    @property
    def required(self) -> bool:
        """Whether a token is configured."""
        return self._token is not None

    def allows(self, authorization: str | None, cookie: str | None = None) -> bool:
        """Whether the ``Authorization`` header carries the token, or ``cookie`` is the dashboard's session value."""
        if self._token is None:
            return True
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                return secrets.compare_digest(value.strip().encode(), self._token.encode())
        return cookie is not None and secrets.compare_digest(cookie.encode(), self.session_value().encode())

    def session_value(self) -> str:
        """What the dashboard cookie holds: a keyed hash of the token, useless as a bearer token."""
        assert self._token is not None, "no token, no session"
        return hmac.new(self._token.encode(), b"squall-dashboard-session", hashlib.sha256).hexdigest()
