"""Bearer-token auth: every route but ``/healthz`` needs ``Authorization: Bearer TOKEN``.

A browser cannot set that header when it opens the dashboard, so the token
may also arrive once as ``/?token=TOKEN``: the service answers with an
HTTP-only, same-site cookie holding it, which the page's own requests then
carry. With no token configured (allowed only on loopback) every request
is let in.
"""

from __future__ import annotations

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
        """Whether the ``Authorization`` header (or the dashboard cookie) carries the token."""
        if self._token is None:
            return True
        presented = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = value.strip()
        presented = presented or cookie
        return presented is not None and secrets.compare_digest(presented.encode(), self._token.encode())
