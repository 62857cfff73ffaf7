"""Without a token, the service answers only requests addressed to a loopback name.

A web page the user visits can make its own DNS name resolve to 127.0.0.1
(DNS rebinding); the browser then sends that page's requests to the service
as same-origin ones, with the page's name in ``Host``. A service without a
token would do whatever they ask, so it refuses any ``Host`` but
``localhost``, a loopback address (``127.0.0.1``, ``[::1]``, any of
127.0.0.0/8) and any port. With a token the host is not checked: a
rebinding page does not know the token, and a service behind a proxy or on
a LAN name has names of its own.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MISDIRECTED = 421
REFUSAL = (
    "this squall service has no token, so it answers only requests addressed to localhost, 127.0.0.1 or [::1]; "
    "open it under one of those names, or set a token (SQUALL_TOKEN) to reach it by another"
)


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header value (``name[:port]``, ``[v6][:port]``) names this machine's loopback."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LoopbackHostsOnly:
    """ASGI middleware: answers 421 to an HTTP request whose ``Host`` is not a loopback name (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_loopback_host(_host(scope)):
            body = json.dumps({"detail": REFUSAL}).encode()
            await send({"type": "http.response.start", "status": MISDIRECTED,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"host":
            return bytes(value).decode("latin-1")
    return ""
